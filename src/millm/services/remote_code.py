"""Remote code: a Hub repo's own Python files, which transformers runs when a load passes `trust_remote_code`.

Running them is arbitrary code execution from the Hub, so two keys are needed: the server's setting
(`--trust-remote-code` / `MILLM_TRUST_REMOTE_CODE`, its permission) and, per request, `trust_remote_code` (the
caller's consent; left out, the server's setting applies). A request that asks for it on a server that does not
allow it is a 403 naming the field; a model whose config maps classes to its own code (`auto_map`) loaded without
it is a 400 naming the field, before transformers is asked.
"""

from __future__ import annotations

import json
from pathlib import Path

from millm.errors import Forbidden, InvalidRequest

SETTING_HINT = "start the server with --trust-remote-code (or MILLM_TRUST_REMOTE_CODE=1)"


def check_allowed(requested: bool | None, *, allowed: bool) -> None:
    """Refuse a request's `trust_remote_code: true` on a server that does not allow remote code."""
    if requested and not allowed:
        raise Forbidden(
            "trust_remote_code was requested, but this server does not run code from model repos (it is arbitrary "
            f"code execution from the Hub). To allow it, {SETTING_HINT}.",
            param="trust_remote_code", code="trust_remote_code_disabled",
        )  # fmt: skip


def needs_remote_code(folder: Path) -> bool:
    """Whether the model in `folder` maps its config, model or tokenizer classes to its own Python code."""
    for name in ("config.json", "tokenizer_config.json"):
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("auto_map"):
            return True
    return False


def check_loadable(folder: Path | None, *, trusted: bool, name: str) -> None:
    """Refuse, before transformers runs anything, to load a model that needs its own code without consent."""
    if trusted or folder is None or not needs_remote_code(folder):
        return
    raise InvalidRequest(
        f"'{name}' needs its own Python code from the repo to load (its config has an auto_map). Running it is "
        "arbitrary code execution: read the repo's code first, then send trust_remote_code: true"
        f" (the server must allow it: {SETTING_HINT}).",
        param="trust_remote_code", code="trust_remote_code_required",
    )  # fmt: skip
