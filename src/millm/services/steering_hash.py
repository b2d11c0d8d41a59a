"""The canonical form of applied steering and its SHA-256 (`millm.steering.hash`, `X-MiLLM-Steering-Hash`).

The canonical form is one JSON object, written with sorted keys, no whitespace (separators `,` and `:`),
ASCII only (`\\uXXXX` escapes) and these members:

- `v`: 1 (the version of this form);
- `sae`, `d_sae`, `hook_name`, `layer`: the attached SAE's id, width, hook point and layer;
- `mode`: `add` or `clamp`;
- `normalize`: unit-norm decoder rows (add only; always false for clamp, where it has no effect);
- `steer_special_tokens`: whether special-token positions are steered;
- `features`: `[index, strength]` pairs sorted by index, each strength the one applied (raw strength times
  the scale) as a JSON number in Python's shortest round-trip form (`repr(float)`: `8.0`, `-0.5`, `1e-05`;
  negative zero written as `0.0`).

The hash is the lower-case hex SHA-256 of the form's UTF-8 bytes. Labels, the source (request, profile,
server) and the profile name are left out, so the same steering hashes the same wherever it came from.
docs/api.md publishes test vectors.
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable

CANONICAL_VERSION = 1


def canonical_form(*, sae: str, d_sae: int, hook_name: str, layer: int | None, mode: str, normalize: bool,
                   steer_special_tokens: bool, features: Iterable[tuple[int, float]]) -> str:
    doc = {
        "v": CANONICAL_VERSION, "sae": sae, "d_sae": int(d_sae), "hook_name": hook_name,
        "layer": None if layer is None else int(layer), "mode": mode,
        "normalize": bool(normalize) and mode == "add", "steer_special_tokens": bool(steer_special_tokens),
        "features": [[int(i), float(s) + 0.0] for i, s in sorted(features)],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def steering_hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
