"""Settings come from MILLM_* variables and from `millm serve` flags, one flag per field."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from millm.__main__ import main
from millm.config import Settings


def test_environment_variables(monkeypatch):
    monkeypatch.setenv("MILLM_PORT", "9123")
    monkeypatch.setenv("MILLM_DTYPE", "bfloat16")
    monkeypatch.setenv("MILLM_CORS_ORIGINS", '["http://a", "http://b"]')
    s = Settings()
    assert (s.port, s.dtype, s.cors_origins) == (9123, "bfloat16", ["http://a", "http://b"])


def test_defaults_bind_loopback_8000():
    s = Settings(_env_file=None)
    assert (s.host, s.port) == ("127.0.0.1", 8000)


def test_every_setting_has_a_flag_with_help():
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for name in Settings.model_fields:
        flag = "--" + name.replace("_", "-")
        assert flag in result.output, flag
        assert f"MILLM_{name.upper()}" in result.output


def test_serve_passes_flags_to_settings(monkeypatch):
    from types import SimpleNamespace

    import uvicorn

    import millm.app

    seen = {}

    def fake_run(server):
        seen["config"] = server.config

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    monkeypatch.setattr(millm.app, "create_app",
                        lambda settings: seen.setdefault("app", SimpleNamespace(settings=settings, state=SimpleNamespace())))
    result = CliRunner().invoke(main, ["serve", "--port", "8765", "--model", "some/model", "--no-restore-state",
                                       "--data-dir", "/tmp/x", "--log-format", "json"])
    assert result.exit_code == 0, result.output
    s = seen["app"].settings
    assert (s.port, s.model, s.restore_state, s.data_dir) == (8765, "some/model", False, Path("/tmp/x"))
    assert seen["config"].port == 8765 and seen["config"].host == "127.0.0.1" and not seen["config"].access_log
    assert callable(seen["app"].state.request_shutdown)  # POST /api/shutdown can stop it

    seen.clear()
    assert CliRunner().invoke(main, ["serve", "other/model", "--port", "8766"]).exit_code == 0
    assert seen["app"].settings.model == "other/model"  # the model as a positional argument, as vLLM takes it


def test_data_folder_is_the_platforms_unless_an_old_one_is_here(tmp_path, monkeypatch, caplog) -> None:
    import logging

    from millm.config import Settings, data_dir_origin
    from millm.services.runtime import Runtime

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MILLM_DATA_DIR", raising=False)
    s = Settings()
    assert s.data_dir == tmp_path / "xdg" / "millm" and data_dir_origin(s) == "the platform's data folder"
    with caplog.at_level(logging.INFO, logger="millm.services.runtime"):
        Runtime(s).db.close()
    assert (tmp_path / "xdg" / "millm" / "millm.db").is_file()
    assert f"data folder: {tmp_path / 'xdg' / 'millm'} (the platform's data folder)" in caplog.text

    (tmp_path / "data").mkdir()
    assert Settings().data_dir == tmp_path / "xdg" / "millm"  # an unrelated empty ./data is not ours
    (tmp_path / "data" / "millm.db").touch()
    old = Settings()
    assert old.data_dir == Path("data") and "earlier version" in data_dir_origin(old)
    monkeypatch.setenv("MILLM_DATA_DIR", str(tmp_path / "mine"))
    mine = Settings()
    assert mine.data_dir == tmp_path / "mine" and data_dir_origin(mine) == "set by MILLM_DATA_DIR or --data-dir"


def test_the_stream_hold_reaches_the_worker(tmp_path):
    from millm.services.runtime import Runtime

    for ms, seconds in ((None, 0.010), (0, 0.0), (2.5, 0.0025)):
        kw = {} if ms is None else {"stream_hold_ms": ms}
        rt = Runtime(Settings(data_dir=tmp_path / str(ms), **kw))
        try:
            assert rt.worker.deferred.max_hold == pytest.approx(seconds)
        finally:
            rt.db.close()
    with pytest.raises(ValueError, match="stream_hold_ms"):
        Settings(stream_hold_ms=-1)
