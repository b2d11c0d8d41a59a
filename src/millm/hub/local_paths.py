"""Which local folders a client may name: the API's guard against reading (or probing) the server's disk.

A model or SAE source that is a local path is accepted only inside one of the allowed roots: the Hugging
Face cache, the data dir, the bundled demo assets, the folders of the start-up model and SAE, and the
folders named with `allowed_paths` (`--allowed-path`, `MILLM_ALLOWED_PATHS`). Paths are resolved (`..` and
symlinks followed) before the check, and `~` is never expanded. Anything else, existing or not, gets the same
`PathNotAllowed`, whose message names no path and lists nothing, so the API cannot tell a client whether a
path outside the roots exists. Inside the roots the usual messages (no such folder, no config.json) apply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from millm.errors import InvalidRequest, PathNotAllowed


def looks_like_path(source: str) -> bool:
    """Whether a model/SAE argument is meant as a local path rather than a Hub repo id."""
    return source.startswith((".", "/", "~")) or "\\" in source or source.count("/") > 1 or "\x00" in source


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


@dataclass(frozen=True)
class LocalRoots:
    roots: tuple[Path, ...]

    @classmethod
    def of(cls, *folders: str | os.PathLike[str] | None) -> LocalRoots:
        out: list[Path] = []
        for f in folders:
            if f is None or str(f) == "":
                continue
            try:
                real = _real(Path(f).expanduser())  # (server-side settings may use ~; clients' paths may not)
            except (OSError, RuntimeError, ValueError):
                continue
            if real not in out:
                out.append(real)
        return cls(tuple(out))

    def refused(self, param: str) -> PathNotAllowed:
        return PathNotAllowed(
            f"{param}: local paths are accepted only inside the folders this server allows (the Hugging Face cache, "
            "its data dir and the folders named with --allowed-path / MILLM_ALLOWED_PATHS); give a Hub repo id or "
            "a path inside one of them", param=param)

    def resolve(self, source: str, *, param: str) -> Path:
        """The real path of a client's local path inside an allowed root; PathNotAllowed otherwise (the same
        error whether or not the path exists), InvalidRequest for text that cannot be a path here."""
        if source.startswith("~") or "\x00" in source:
            raise self.refused(param)
        try:
            real = _real(Path(source))
        except (OSError, ValueError):
            raise self.refused(param) from None
        if not any(real == root or real.is_relative_to(root) for root in self.roots):
            raise self.refused(param)
        try:
            os.fsencode(str(real))
            real.exists()
        except UnicodeError:
            raise InvalidRequest(f"{param} cannot be a file name here (it does not encode)", param=param,
                                 code="invalid_path") from None
        except OSError:
            raise InvalidRequest(f"{param} is not a usable path (too long, or a part of it is not a folder)",
                                 param=param, code="invalid_path") from None
        return real

    def existing_dir(self, source: str) -> Path | None:
        """For a bare name (no path syntax): the folder of that name, relative to the working directory, when it
        lies in an allowed root; None otherwise, without a word about what is outside the roots."""
        try:
            real = _real(Path(source))
            inside = any(real == root or real.is_relative_to(root) for root in self.roots)
            return real if inside and real.is_dir() else None
        except (OSError, ValueError):
            return None


UNRESTRICTED = None  # find_model(..., roots=None): the CLI and the server's own start-up sources
