"""Names shared by several wire shapes (and by the services that handle them)."""

from __future__ import annotations

from typing import Literal

SteeringMode = Literal["add", "clamp"]
"""How steering changes a feature: add `strength·W_dec[i]` to the residual, or clamp the feature's activation."""
