"""How a model is loaded: the server's defaults (from Settings, built once) and a client's choices per load.

`LoadDefaults.placement(options)` is where a load's device, dtype and quantization are decided: the
client's choice, else the server's setting, with "auto" resolved once by `millm.placement`. The load
(`services/models.py`), its memory check and `/api/models/estimate` (`services/hub.py`) all use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from millm.config import Settings
from millm.placement import Placement, resolve_placement


@dataclass(frozen=True)
class LoadOptions:
    """What a client may choose per load; None takes the server's default."""

    revision: str | None = None
    model_id: str | None = None  # the name to serve it under (default: the model argument)
    device: str | None = None
    dtype: str | None = None
    quantization: str | None = None
    trust_remote_code: bool | None = None  # the caller's consent (None: the server's setting applies)


@dataclass(frozen=True)
class LoadDefaults:
    """The server's load settings."""

    device: str = "auto"
    dtype: str = "auto"
    quantization: str = "none"
    trust_remote_code: bool = False
    cache_dir: Path | None = None
    max_context: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LoadDefaults:
        return cls(device=settings.device, dtype=settings.dtype, quantization=settings.quantization,
                   trust_remote_code=settings.trust_remote_code, cache_dir=settings.cache_dir,
                   max_context=settings.max_context)

    def placement(self, options: LoadOptions | None = None, *, require_device: bool = False) -> Placement:
        """Device, dtype and quantization for a load (or an estimate) with `options`, "auto" resolved."""
        o = options or LoadOptions()
        return resolve_placement(o.device or self.device, o.dtype or self.dtype, o.quantization or self.quantization,
                                 require_device=require_device)
