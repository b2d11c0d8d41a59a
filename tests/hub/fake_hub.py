"""A local stand-in for the Hugging Face Hub, for offline tests.

It speaks the subset of the Hub HTTP API that huggingface_hub 2.4 uses to resolve and
download files, so tests run the real huggingface_hub code against it:

- ``GET /api/models/{repo_id}[/revision/{rev}]``: model info with ``siblings`` (sizes and
  LFS info when ``?blobs=true``), ``sha`` and a ``safetensors`` parameter summary.
- ``GET /api/models/{repo_id}/tree/{rev}[/{path}]``: a flat file listing.
- ``HEAD``/``GET /{repo_id}/resolve/{rev}/{filename}``: ``X-Repo-Commit``, ``ETag``,
  ``Content-Length``, ``Accept-Ranges``; ``Range: bytes=a-[b]`` gives a 206.

No Xet headers are ever sent, so downloads take huggingface_hub's plain HTTP path.
Errors carry the Hub's ``X-Error-Code`` header (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``, ``GatedRepo``), and private repos answer 401 without a valid
``Authorization: Bearer`` token. Fault injection: `drop_once` closes the connection
mid-file once; `pause_once` stops mid-file until the returned event is set.

Use it as a context manager (or `start`/`stop`), add repos with `add_repo` or
`add_folder`, and pass `endpoint` to huggingface_hub as ``endpoint=``.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

CHUNK = 16 * 1024
_LFS_SUFFIXES = (".safetensors", ".bin", ".npz", ".pt", ".gguf")
_DTYPE_NAMES = {"F64": "F64", "F32": "F32", "F16": "F16", "BF16": "BF16", "I64": "I64", "I32": "I32", "U8": "U8"}


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    private: bool = False
    gated: bool = False
    tokens: set[str] = field(default_factory=set)  # accepted tokens (private or gated repos)
    sha: str = ""
    branches: dict[str, str] = field(default_factory=dict)  # branch/tag -> sha
    history: dict[str, dict[str, bytes]] = field(default_factory=dict)  # older commits: sha -> files
    # Extra model-info fields as the Hub sends them (downloads, likes, pipeline_tag, tags, cardData, ...).
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.sha:
            self.sha = self._commit_sha(self.files)
        self.branches.setdefault("main", self.sha)

    def _commit_sha(self, files: dict[str, bytes]) -> str:
        digest = hashlib.sha1(self.repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + files[name])
        return digest.hexdigest()

    def push(self, files: dict[str, bytes | str], *, tag_previous: str | None = None) -> str:
        """Make `files` the new main commit; the old one stays reachable by sha (and `tag_previous`)."""
        self.history[self.sha] = self.files
        if tag_previous:
            self.branches[tag_previous] = self.sha
        self.files = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
        self.sha = self.branches["main"] = self._commit_sha(self.files)
        return self.sha

    def files_at(self, sha: str) -> dict[str, bytes]:
        return self.files if sha == self.sha else self.history[sha]

    def is_lfs(self, name: str) -> bool:
        return name.endswith(_LFS_SUFFIXES)

    def etag(self, name: str, sha: str | None = None) -> str:
        data = self.files_at(sha or self.sha)[name]
        return hashlib.sha256(data).hexdigest() if self.is_lfs(name) else _git_blob_sha(data)

    def resolve(self, rev: str) -> str | None:
        if rev in self.branches:
            return self.branches[rev]
        return rev if rev == self.sha or rev in self.history else None

    def sibling(self, name: str, blobs: bool, sha: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"rfilename": name}
        if blobs:
            data = self.files_at(sha)[name]
            entry["size"] = len(data)
            entry["blobId"] = _git_blob_sha(data)
            if self.is_lfs(name):
                entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
        return entry

    def config_summary(self, sha: str) -> dict[str, Any] | None:
        """The `config` the Hub derives from config.json: model_type, architectures and auto_map."""
        try:
            config = json.loads(self.files_at(sha)["config.json"])
        except (KeyError, ValueError):
            return None
        if not isinstance(config, dict):
            return None
        return {k: config[k] for k in ("model_type", "architectures", "auto_map") if k in config}

    def safetensors_summary(self, sha: str) -> dict[str, Any] | None:
        counts: dict[str, int] = {}
        for name, data in self.files_at(sha).items():
            if not name.endswith(".safetensors") or "/" in name:
                continue
            try:
                (n,) = struct.unpack("<Q", data[:8])
                header = json.loads(data[8 : 8 + n])
            except (struct.error, ValueError):
                continue  # not a real safetensors file (random test bytes)
            if not isinstance(header, dict):
                continue
            for key, info in header.items():
                if key == "__metadata__":
                    continue
                numel = 1
                for d in info["shape"]:
                    numel *= d
                dtype = _DTYPE_NAMES.get(info["dtype"], info["dtype"])
                counts[dtype] = counts.get(dtype, 0) + numel
        if not counts:
            return None
        return {"parameters": counts, "total": sum(counts.values())}


@dataclass
class _Fault:
    repo_id: str
    filename: str
    after_bytes: int
    kind: str  # "drop" or "pause"
    release: threading.Event = field(default_factory=threading.Event)
    fired: bool = False


class FakeHub:
    """A threaded HTTP server speaking enough of the Hub API for huggingface_hub downloads."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[dict[str, Any]] = []  # method, path, range, authorization
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        for fault in self._faults:
            fault.release.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- content
    def add_repo(self, repo_id: str, files: dict[str, bytes | str], **kwargs: Any) -> FakeRepo:
        blobs = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
        repo = FakeRepo(repo_id=repo_id, files=blobs, **kwargs)
        self.repos[repo_id] = repo
        return repo

    def add_folder(self, repo_id: str, folder: str | Path, **kwargs: Any) -> FakeRepo:
        root = Path(folder)
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        return self.add_repo(repo_id, files, **kwargs)

    # ---------------------------------------------------------------- faults
    def drop_once(self, repo_id: str, filename: str, after_bytes: int) -> None:
        """Next GET of the file sends `after_bytes` bytes, then closes the connection."""
        self._faults.append(_Fault(repo_id, filename, after_bytes, "drop"))

    def pause_once(self, repo_id: str, filename: str, after_bytes: int) -> threading.Event:
        """Next GET of the file sends `after_bytes` bytes, then waits until the event is set."""
        fault = _Fault(repo_id, filename, after_bytes, "pause")
        self._faults.append(fault)
        return fault.release

    def _take_fault(self, repo_id: str, filename: str, start: int) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if (
                    not fault.fired
                    and fault.repo_id == repo_id
                    and fault.filename == filename
                    and start < fault.after_bytes
                ):
                    fault.fired = True
                    return fault
        return None

    def gets(self, filename: str) -> list[dict[str, Any]]:
        """The GET requests recorded for a resolve URL ending in `filename`."""
        return [r for r in self.requests if r["method"] == "GET" and r["path"].endswith("/" + filename)]


# -------------------------------------------------------------------- handler
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+|[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
            pass

        def do_HEAD(self) -> None:  # noqa: N802
            self._dispatch(head=True)

        def do_GET(self) -> None:  # noqa: N802
            self._dispatch(head=False)

        # ------------------------------------------------------------ helpers
        def _dispatch(self, head: bool) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            hub.requests.append(
                {
                    "method": self.command,
                    "path": path,
                    "range": self.headers.get("Range"),
                    "authorization": self.headers.get("Authorization"),
                }
            )
            if path.startswith("/api/models/"):
                self._api(path[len("/api/models/") :], parse_qs(url.query))
                return
            match = _RESOLVE.match(path)
            if match is None:
                self._error(404, "EntryNotFound", "unknown route")
                return
            self._resolve(match["repo"], match["rev"], match["file"], head)

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
            extra = dict(headers or {})
            if code is not None:
                extra["X-Error-Code"] = code
            extra["X-Error-Message"] = message
            extra["Content-Type"] = "application/json"
            self._send(status, json.dumps({"error": message}).encode(), extra)

        def _authorize(self, repo: FakeRepo) -> bool:
            if not (repo.private or repo.gated):
                return True
            auth = self.headers.get("Authorization", "")
            token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
            if token in repo.tokens:
                return True
            if repo.private or token is None:
                message = "Invalid credentials in Authorization header" if token else "Invalid username or password."
                self._error(401, "RepoNotFound" if token is None else None, message)
            else:
                self._error(403, "GatedRepo", "Access to this gated repo is restricted.")
            return False

        def _repo(self, repo_id: str) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            return repo if self._authorize(repo) else None

        def _api(self, rest: str, query: dict[str, list[str]]) -> None:
            for marker in ("/revision/", "/tree/"):
                if marker in rest:
                    repo_id, tail = rest.split(marker, 1)
                    break
            else:
                repo_id, marker, tail = rest, "/revision/", "main"
            repo = self._repo(repo_id)
            if repo is None:
                return
            rev, _, sub = tail.partition("/")
            sha = repo.resolve(rev)
            if sha is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return
            if marker == "/tree/":
                prefix = sub.rstrip("/") + "/" if sub else ""
                entries = [
                    {"type": "file", "path": n, "size": len(d), "oid": _git_blob_sha(d)}
                    for n, d in sorted(repo.files_at(sha).items())
                    if n.startswith(prefix)
                ]
                self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"})
                return
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            info: dict[str, Any] = {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": sha,
                "private": repo.private,
                "gated": "auto" if repo.gated else False,
                "siblings": [repo.sibling(n, blobs, sha) for n in sorted(repo.files_at(sha))],
            }
            summary = repo.safetensors_summary(sha)
            if summary is not None:
                info["safetensors"] = summary
            config = repo.config_summary(sha)
            if config is not None:
                info["config"] = config
            info.update(repo.meta)
            self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})

        def _resolve(self, repo_id: str, rev: str, filename: str, head: bool) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            sha = repo.resolve(rev)
            if sha is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return
            files = repo.files_at(sha)
            if filename not in files:
                self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": sha})
                return
            data = files[filename]
            headers = {
                "X-Repo-Commit": sha,
                "ETag": f'"{repo.etag(filename, sha)}"',
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            start, end = 0, len(data) - 1
            status = 200
            range_header = self.headers.get("Range")
            if range_header and not head:
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
                if m is None or int(m[1]) >= len(data):
                    self._error(416, None, "Range not satisfiable", {"Content-Range": f"bytes */{len(data)}"})
                    return
                start = int(m[1])
                end = min(int(m[2]), len(data) - 1) if m[2] else len(data) - 1
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            body = data[start : end + 1]
            if head:
                self.send_response(200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return
            fault = hub._take_fault(repo_id, filename, start)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = len(body) if fault is None else max(fault.after_bytes - start, 0)
            self._write_chunks(body[:cut])
            if fault is None:
                return
            if fault.kind == "pause":
                fault.release.wait(timeout=30)
                self._write_chunks(body[cut:])
                return
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _write_chunks(self, body: bytes) -> None:
            try:
                for i in range(0, len(body), CHUNK):
                    self.wfile.write(body[i : i + CHUNK])
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    return Handler
