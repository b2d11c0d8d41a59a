"""Settings come from MILLM_* variables and from `millm serve` flags, one flag per field."""

from __future__ import annotations

from pathlib import Path

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
    seen = {}

    def fake_run(self):
        seen.update(port=self.config.port, host=self.config.host)

    import millm.app
    from millm.server import DrainingServer

    monkeypatch.setattr(DrainingServer, "run", fake_run)
    monkeypatch.setattr(millm.app, "create_app", lambda settings: seen.setdefault("settings", settings))
    result = CliRunner().invoke(main, ["serve", "--port", "8765", "--model", "some/model", "--no-restore-state",
                                       "--data-dir", "/tmp/x", "--log-format", "json"])
    assert result.exit_code == 0, result.output
    s = seen["settings"]
    assert (s.port, s.model, s.restore_state, s.data_dir) == (8765, "some/model", False, Path("/tmp/x"))
    assert seen["port"] == 8765 and seen["host"] == "127.0.0.1"
