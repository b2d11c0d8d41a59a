"""Steering with the `openai` SDK: build the `steering` object with types, read `millm.steering` back.

    from openai import OpenAI
    from millm.client import steer, profile, steering_of

    client = OpenAI(base_url="http://localhost:8000/v1", api_key="unused")
    r = client.chat.completions.create(
        model="millm-demo", messages=[{"role": "user", "content": "Tell me a story."}],
        extra_body=steer({16: 8}).extra_body(),          # or profile("yelling-demo").extra_body()
    )
    applied = steering_of(r)                              # AppliedSteering(source='request', ...)
    applied.features[0].index, applied.features[0].strength   # (16, 8.0)

`steering_of` reads a chat or text completion, an embeddings response, the first chunk of a stream,
a plain dict, or a raw response (`client.chat.completions.with_raw_response.create(...)`, read from
the `X-MiLLM-Steering` header). Install the SDK with `pip install "millm[client]"`; this module
itself imports nothing from it, and the server never imports this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from millm.protocol.common import SteeringMode as Mode

Source = Literal["request", "profile", "model", "server", "none"]
HEADER = "x-millm-steering"


@dataclass(frozen=True)
class Feature:
    """One SAE feature and its strength (added multiple of its decoder row, or the clamped activation)."""

    index: int
    strength: float

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise ValueError(f"feature index must be an integer >= 0, not {self.index!r}")
        if not isinstance(self.strength, (int, float)) or not math.isfinite(self.strength):
            raise ValueError(f"strength of feature {self.index} must be a finite number, not {self.strength!r}")
        object.__setattr__(self, "strength", float(self.strength))

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "strength": self.strength}


FeaturesLike = Mapping[int, float] | Iterable["Feature | tuple[int, float]"]


def _features(features: FeaturesLike) -> tuple[Feature, ...]:
    items = features.items() if isinstance(features, Mapping) else features
    out = tuple(f if isinstance(f, Feature) else Feature(*f) for f in items)
    if len({f.index for f in out}) != len(out):
        raise ValueError("each feature index may appear once")
    return out


@dataclass(frozen=True)
class Steering:
    """The per-request `steering` object. Build it with `steer`, `profile` or `no_steering`."""

    profile: str | None = None
    features: tuple[Feature, ...] | None = None
    mode: Mode | None = None
    normalize: bool | None = None
    steer_special_tokens: bool | None = None

    def __post_init__(self) -> None:
        if self.profile is not None and self.features is not None:
            raise ValueError("give either a profile or features, not both")
        if self.mode not in (None, "add", "clamp"):
            raise ValueError(f"mode must be 'add' or 'clamp', not {self.mode!r}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.profile is not None:
            out["profile"] = self.profile
        if self.features is not None:
            out["features"] = [f.to_dict() for f in self.features]
        for key in ("mode", "normalize", "steer_special_tokens"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def extra_body(self, **other: Any) -> dict[str, Any]:
        """`extra_body=` for the SDK's create() calls; `other` adds further extra fields (e.g. top_k=40)."""
        return {**other, "steering": self.to_dict()}


def steer(features: FeaturesLike, *, mode: Mode | None = None, normalize: bool | None = None,
          steer_special_tokens: bool | None = None) -> Steering:
    """Steer by feature: `steer({16: 8})`, `steer([(16, 8), (3, -2)], mode="clamp")` or `steer([Feature(16, 8)])`."""
    return Steering(features=_features(features), mode=mode, normalize=normalize,
                    steer_special_tokens=steer_special_tokens)


def profile(name: str) -> Steering:
    """Apply a saved profile to this request."""
    if not name:
        raise ValueError("profile name is empty")
    return Steering(profile=name)


def no_steering() -> Steering:
    """No steering for this request, even if the server has some set (`features: []`)."""
    return Steering(features=())


def virtual_model(model: str, profile_name: str) -> str:
    """`<model>+<profile>`: the model id that applies a profile, for clients that cannot send extra fields."""
    return f"{model}+{profile_name}"


@dataclass(frozen=True)
class AppliedSteering:
    """What the server applied to a request (`millm.steering` in the response, `X-MiLLM-Steering`)."""

    source: Source
    profile: str | None = None
    mode: Mode | None = None
    sae: str | None = None
    hook_name: str | None = None
    features: tuple[Feature, ...] = field(default_factory=tuple)

    @property
    def steered(self) -> bool:
        return self.source != "none" and bool(self.features)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AppliedSteering:
        return cls(source=data.get("source", "none"), profile=data.get("profile"), mode=data.get("mode"),
                   sae=data.get("sae"), hook_name=data.get("hook_name"),
                   features=tuple(Feature(int(f["index"]), float(f["strength"])) for f in data.get("features") or []))


def _millm_field(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return obj.get("millm")
    extra = getattr(obj, "model_extra", None)  # openai SDK objects keep unknown fields here
    if isinstance(extra, Mapping) and "millm" in extra:
        return extra["millm"]
    return getattr(obj, "millm", None)


def steering_of(response: Any) -> AppliedSteering | None:
    """The steering applied to `response`; None when it carries none (a stream's middle chunks)."""
    headers = getattr(response, "headers", None)
    if headers is not None and not isinstance(response, Mapping):
        value = headers.get(HEADER)
        if value:
            return AppliedSteering.from_dict(json.loads(value))
        parse = getattr(response, "parse", None)
        if callable(parse):
            return steering_of(parse())
        return None
    info = _millm_field(response)
    if info is None:
        return None
    if not isinstance(info, Mapping):
        info = info.model_dump() if hasattr(info, "model_dump") else vars(info)
    steering = info.get("steering")
    return AppliedSteering.from_dict(steering) if steering is not None else None


__all__ = ["AppliedSteering", "Feature", "Steering", "no_steering", "profile", "steer", "steering_of",
           "virtual_model"]
