"""A throwaway PostgreSQL server for tests: initdb in a temp dir, pg_ctl start, pg_ctl stop.

`postgres_server()` is a context manager yielding a SQLAlchemy URL
(``postgresql+psycopg://postgres@127.0.0.1:PORT/millm_test``). The server listens on a
free loopback port only, keeps its unix socket in the temp dir, and trusts local
connections (``initdb -A trust``). PostgreSQL refuses to run as root, so when the tests
run as root the server commands run as the ``postgres`` OS user via ``runuser``.

`skip_reason()` says why no server can be started here (no binaries, no psycopg, root
without a ``postgres`` user), or None; the fixture in conftest.py skips with it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DATABASE = "millm_test"
OS_USER = "postgres"
_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def find_binary(name: str) -> str | None:
    """`name` from $PG_BIN, PATH or /usr/lib/postgresql/*/bin (newest first)."""
    for directory in ([os.environ["PG_BIN"]] if os.environ.get("PG_BIN") else []) + [str(d) for d in _BIN_DIRS]:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def skip_reason() -> str | None:
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if find_binary(name) is None]
    if missing:
        return f"PostgreSQL server binaries not found ({', '.join(missing)}); install PostgreSQL or set PG_BIN"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'millm[postgres]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            return f"running as root and there is no '{OS_USER}' OS user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is not available to drop to the postgres user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str], *, as_user: str | None, timeout: float = 60) -> None:
    if as_user is not None:
        args = ["runuser", "-u", as_user, "--", *args]
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a fresh server in a new temp dir, create DATABASE, yield its URL, stop it, remove the dir.

    The dir comes from `tempfile.mkdtemp` (under /tmp, traversable by the postgres user),
    not from pytest's tmp_path, whose parents are private to the test user.
    """
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    assert initdb is not None and pg_ctl is not None
    as_user = OS_USER if os.geteuid() == 0 else None
    base_dir = Path(tempfile.mkdtemp(prefix="millm-pg-"))
    data_dir, socket_dir, log_file = base_dir / "data", base_dir / "socket", base_dir / "server.log"
    socket_dir.mkdir(exist_ok=True)
    if as_user is not None:
        account = pwd.getpwnam(as_user)
        for path in (base_dir, socket_dir):
            os.chown(path, account.pw_uid, account.pw_gid)

    try:
        yield from _serve(initdb, pg_ctl, data_dir, socket_dir, log_file, as_user=as_user)
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


def _serve(
    initdb: str, pg_ctl: str, data_dir: Path, socket_dir: Path, log_file: Path, *, as_user: str | None
) -> Iterator[str]:
    _run([initdb, "-D", str(data_dir), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"], as_user=as_user)
    for attempt in range(3):  # another process may take the free port before the server binds it
        port = _free_port()
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={socket_dir} "
            "-c fsync=off -c full_page_writes=off"
        )
        try:
            _run([pg_ctl, "-D", str(data_dir), "-l", str(log_file), "-o", options, "-w", "-t", "30", "start"],
                 as_user=as_user)
            break
        except RuntimeError:
            if attempt == 2:
                raise RuntimeError(f"PostgreSQL did not start; log:\n{_tail(log_file)}") from None
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        _run([pg_ctl, "-D", str(data_dir), "-m", "fast", "-w", "stop"], as_user=as_user)
