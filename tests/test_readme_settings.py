"""README's settings table is the one generated from the Settings model: a new or changed setting must be
documented (run `python scripts/settings_table.py --write`)."""

from __future__ import annotations

import runpy
from pathlib import Path

from millm.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_settings_table_matches_the_settings_model():
    gen = runpy.run_path(str(ROOT / "scripts" / "settings_table.py"))
    current = gen["readme_section"]((ROOT / "README.md").read_text())
    assert current is not None, "README.md lost the settings-table markers"
    assert current == gen["section"](), "README.md's settings table is stale: python scripts/settings_table.py --write"
    for name in Settings.model_fields:
        assert f"`MILLM_{name.upper()}`" in current
