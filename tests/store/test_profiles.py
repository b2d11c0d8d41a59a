"""Profile repository: CRUD, optimistic concurrency, the active profile, durability."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import millm
from millm.errors import Conflict, NotFound
from millm.store import profiles as repo
from millm.store.db import Database, open_database
from millm.store.profiles import ProfileData


def make_data(name: str = "calm", **changes: object) -> ProfileData:
    data = ProfileData(
        name=name,
        description="a calm assistant",
        model_id="millm-demo",
        sae_id="millm-demo-sae",
        sae_hook_name="blocks.3.hook_resid_post",
        sae_layer=3,
        d_sae=2048,
        mode="add",
        normalize=False,
        features=[{"index": 12, "strength": 8.0, "label": "CAPS"}, {"index": 7, "strength": -1.5, "label": None}],
        sae_repo_id="someone/saes",
        sae_path="layer_3",
    )
    return replace(data, **changes)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(data_dir=tmp_path)
    yield database
    database.close()


def test_create_get_list_round_trip(db: Database) -> None:
    with db.session_factory.begin() as session:
        repo.create_profile(session=session, data=make_data("calm"))
        repo.create_profile(session=session, data=make_data("angry", model_id="other"))
    with db.session_factory.begin() as session:
        row = repo.get_profile(session=session, name="calm")
        assert repo.row_data(row) == make_data("calm")
        assert row.version == 1 and row.created_at == row.updated_at
        assert [r.name for r in repo.list_profiles(session=session)] == ["angry", "calm"]
        assert [r.name for r in repo.list_profiles(session=session, model_id="other")] == ["angry"]
        assert repo.count_profiles(session=session) == 2


def test_duplicate_name_is_a_conflict(db: Database) -> None:
    with db.session_factory.begin() as session:
        repo.create_profile(session=session, data=make_data("calm"))
    with pytest.raises(Conflict) as info, db.session_factory.begin() as session:
        repo.create_profile(session=session, data=make_data("calm"))
    assert info.value.param == "name"


def test_missing_profile_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound), db.session_factory.begin() as session:
        repo.get_profile(session=session, name="nope")


def test_update_bumps_version_and_refuses_stale_versions(db: Database) -> None:
    with db.session_factory.begin() as session:
        repo.create_profile(session=session, data=make_data("calm"))
    with db.session_factory.begin() as session:
        row = repo.update_profile(
            session=session, name="calm", expected_version=1, data=make_data("calm", description="calmer")
        )
        assert (row.version, row.description) == (2, "calmer")
        assert row.updated_at >= row.created_at
    with pytest.raises(Conflict) as info, db.session_factory.begin() as session:
        repo.update_profile(session=session, name="calm", expected_version=1, data=make_data("calm", description="lost"))
    assert info.value.code == "version_conflict" and info.value.param == "version"
    with db.session_factory.begin() as session:
        assert repo.get_profile(session=session, name="calm").description == "calmer"


def test_rename_to_a_taken_name_is_a_conflict(db: Database) -> None:
    with db.session_factory.begin() as session:
        repo.create_profile(session=session, data=make_data("calm"))
        repo.create_profile(session=session, data=make_data("ocean"))
    with pytest.raises(Conflict), db.session_factory.begin() as session:
        repo.update_profile(session=session, name="calm", expected_version=1, data=make_data("ocean"))


def test_delete_checks_version_and_clears_active(db: Database) -> None:
    with db.session_factory.begin() as session:
        repo.create_profile(session=session, data=make_data("calm"))
        repo.set_active(session=session, name="calm")
    with pytest.raises(Conflict), db.session_factory.begin() as session:
        repo.delete_profile(session=session, name="calm", expected_version=7)
    with db.session_factory.begin() as session:
        assert repo.delete_profile(session=session, name="calm", expected_version=1) is True
    with db.session_factory.begin() as session:
        assert repo.find_profile(session=session, name="calm") is None
        assert repo.get_active(session=session) is None


def test_duplicate_copies_content_under_a_new_name(db: Database) -> None:
    with db.session_factory.begin() as session:
        repo.create_profile(session=session, data=make_data("calm"))
        copy = repo.duplicate_profile(session=session, name="calm", new_name="calm-copy", description="copy")
    assert repo.row_data(copy) == make_data("calm-copy", description="copy")
    assert copy.version == 1


def test_active_profile_follows_renames_and_persists(tmp_path: Path) -> None:
    db = open_database(data_dir=tmp_path)
    with db.session_factory.begin() as session:
        assert repo.get_active(session=session) is None
        repo.create_profile(session=session, data=make_data("calm"))
        repo.set_active(session=session, name="calm")
        repo.update_profile(session=session, name="calm", expected_version=1, data=make_data("serene"))
    db.close()

    db = open_database(data_dir=tmp_path)
    with db.session_factory.begin() as session:
        active = repo.get_active(session=session)
        assert active is not None and active.name == "serene"
        assert repo.row_data(active) == make_data("serene")
        repo.set_active(session=session, name=None)
        assert repo.get_active(session=session) is None
    db.close()


def test_failed_transaction_writes_nothing(db: Database) -> None:
    with pytest.raises(Conflict), db.session_factory.begin() as session:
        repo.create_profile(session=session, data=make_data("a"))
        repo.create_profile(session=session, data=make_data("a"))
    with db.session_factory.begin() as session:
        assert repo.count_profiles(session=session) == 0


# ---------------------------------------------------------------------------------------
# Durability: SIGKILL during a burst of writes

WRITER = """
import sys
from pathlib import Path
from millm.store.db import open_database
from millm.store.profiles import ProfileData, create_profile

db = open_database(data_dir=Path(sys.argv[1]))
prefix = sys.argv[2]
features = [{"index": j, "strength": j / 3, "label": "x" * 40} for j in range(64)]
i = 0
while True:
    name = f"{prefix}-{i}"
    with db.session_factory.begin() as session:
        create_profile(session=session, data=ProfileData(
            name=name, description="burst " * 20, model_id="m", sae_id="s", sae_hook_name="h",
            sae_layer=0, d_sae=4096, mode="add", normalize=False, features=features))
    sys.stdout.write(name + "\\n")
    sys.stdout.flush()
    i += 1
"""


def _kill_during_burst(data_dir: Path, prefix: str, *, min_acks: int) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(millm.__file__).parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data_dir), prefix], stdout=subprocess.PIPE, env=env, text=True
    )
    assert proc.stdout is not None
    acked: list[str] = []
    deadline = time.monotonic() + 30
    while len(acked) < min_acks and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(line.rstrip("\n"))
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()  # lines written before the kill are acknowledgements too
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    acked += [line for line in rest.split("\n")[:-1]]  # the last piece may be a torn line
    assert len(acked) >= min_acks, "writer did not start"
    return acked


def test_sigkill_during_writes_keeps_every_acknowledged_profile(tmp_path: Path) -> None:
    acked: list[str] = []
    for round_, min_acks in enumerate((25, 60)):
        acked += _kill_during_burst(tmp_path, f"r{round_}", min_acks=min_acks)

    db = open_database(data_dir=tmp_path)
    try:
        with db.session_factory.begin() as session:
            assert session.connection().exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            stored = {row.name for row in repo.list_profiles(session=session)}
            assert set(acked) <= stored
            # At most one commit per round can land without being acknowledged.
            assert len(stored - set(acked)) <= 2
            row = repo.get_profile(session=session, name=acked[-1])
            assert len(row.features) == 64
    finally:
        db.close()
