"""The bundled demo: a small Llama trained on a generated corpus, plus an SAE on its residual stream.

`assets_dir()` is where the shipped files live (package data).
"""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL_ID = "millm-demo"
DEMO_SAE_ID = "millm-demo-sae"


def assets_dir() -> Path:
    return Path(__file__).resolve().parent / "assets"
