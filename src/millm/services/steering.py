"""Server-wide steering state and per-request steering resolution.

Precedence for a request: its own `steering` object, then the profile named by a virtual
model id (`<model>+<profile>`), then the server-wide steering (set directly or by activating a
profile). The result is an engine `SteeringSpec` plus an `AppliedSteering` receipt that the
API echoes in the response. Indices are checked against the attached SAE's d_sae here, so a
bad index is a 400 naming the field and never reaches the worker.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from typing import Callable, Literal, Protocol

from millm.engine.types import FeatureStrength, SteeringSpec
from millm.errors import InvalidRequest, NotFound
from millm.protocol.openai import AppliedSteering, SteeringFeatureIn, SteeringIn

Mode = Literal["add", "clamp"]


@dataclass(frozen=True)
class SaeInfo:
    sae_id: str
    d_sae: int
    hook_name: str
    model_id: str


@dataclass(frozen=True)
class NamedSteering:
    """A profile, as far as steering is concerned."""

    name: str
    model: str | None
    sae_id: str | None
    d_sae: int | None
    mode: Mode
    normalize: bool
    features: tuple[FeatureStrength, ...]
    labels: tuple[str | None, ...] = ()


class ProfileLookup(Protocol):
    def __call__(self, name: str) -> NamedSteering: ...


@dataclass
class ServerSteering:
    enabled: bool = True
    mode: Mode = "add"
    normalize: bool = False
    steer_special_tokens: bool = True
    features: dict[int, float] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)
    profile: str | None = None


def _validate_features(features: list[tuple[int, float]], d_sae: int, param: str) -> None:
    for i, (index, strength) in enumerate(features):
        if not 0 <= index < d_sae:
            raise InvalidRequest(
                f"feature index {index} is out of range: the attached SAE has d_sae={d_sae}",
                param=f"{param}[{i}].index",
            )
        if not math.isfinite(strength):
            raise InvalidRequest("strength must be a finite number", param=f"{param}[{i}].strength")


class SteeringService:
    def __init__(self, *, sae_info: Callable[[], SaeInfo | None], lookup: ProfileLookup | None = None,
                 model_names: Callable[[], tuple[str, ...]] | None = None) -> None:
        self._sae_info = sae_info
        self.lookup = lookup
        # The ids a profile may name the loaded model by (the served name and the loaded id).
        self._model_names = model_names
        self._state = ServerSteering()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ server-wide state

    @property
    def state(self) -> ServerSteering:
        with self._lock:
            return replace(self._state, features=dict(self._state.features), labels=dict(self._state.labels))

    def _require_sae(self, param: str) -> SaeInfo:
        info = self._sae_info()
        if info is None:
            raise InvalidRequest("no SAE is attached: attach one before steering", param=param, code="no_sae")
        return info

    def set(
        self,
        *,
        features: list[tuple[int, float]],
        mode: Mode = "add",
        normalize: bool = False,
        steer_special_tokens: bool = True,
        labels: dict[int, str] | None = None,
        profile: str | None = None,
    ) -> ServerSteering:
        if features:
            _validate_features(features, self._require_sae("features").d_sae, "features")
        with self._lock:
            enabled = self._state.enabled
            self._state = ServerSteering(
                enabled=enabled, mode=mode, normalize=normalize, steer_special_tokens=steer_special_tokens,
                features={i: s for i, s in features}, labels=dict(labels or {}), profile=profile,
            )
        return self.state

    def patch(self, *, features: list[tuple[int, float | None]], mode: Mode | None = None) -> ServerSteering:
        """Update strengths; a strength of None removes that feature."""
        present = [(i, s) for i, s in features if s is not None]
        if present:
            _validate_features(present, self._require_sae("features").d_sae, "features")
        with self._lock:
            for i, s in features:
                if s is None:
                    self._state.features.pop(i, None)
                else:
                    self._state.features[i] = s
            if mode is not None:
                self._state.mode = mode
            self._state.profile = None
        return self.state

    def clear(self) -> ServerSteering:
        with self._lock:
            self._state = ServerSteering(enabled=self._state.enabled)
        return self.state

    def set_enabled(self, enabled: bool) -> ServerSteering:
        with self._lock:
            self._state.enabled = enabled
        return self.state

    def activate(self, profile: NamedSteering) -> ServerSteering:
        self.check_compatible(profile, param="name")
        return self.set(
            features=[(f.index, f.strength) for f in profile.features],
            mode=profile.mode,
            normalize=profile.normalize,
            labels={f.index: lab for f, lab in zip(profile.features, profile.labels) if lab},
            profile=profile.name,
        )

    def deactivate(self) -> ServerSteering:
        return self.clear()

    # ------------------------------------------------------------------ per request

    def check_compatible(self, profile: NamedSteering, *, param: str) -> None:
        info = self._require_sae(param)
        names = (self._model_names() if self._model_names is not None else ()) or (info.model_id,)
        if profile.model is not None and profile.model not in names:
            raise InvalidRequest(
                f"profile {profile.name!r} was made for model {profile.model!r}, but {names[0]!r} is loaded",
                param=param, code="profile_mismatch",
            )
        if profile.sae_id is not None and profile.sae_id != info.sae_id:
            raise InvalidRequest(
                f"profile {profile.name!r} was made for SAE {profile.sae_id!r}, but {info.sae_id!r} is attached",
                param=param, code="profile_mismatch",
            )
        if profile.d_sae is not None and profile.d_sae != info.d_sae:
            raise InvalidRequest(
                f"profile {profile.name!r} expects d_sae={profile.d_sae}, the attached SAE has {info.d_sae}",
                param=param, code="profile_mismatch",
            )
        _validate_features([(f.index, f.strength) for f in profile.features], info.d_sae, f"{param}.features")

    def has_profile(self, name: str) -> bool:
        if self.lookup is None:
            return False
        try:
            self.lookup(name)
        except NotFound:
            return False
        return True

    def _profile(self, name: str, param: str) -> NamedSteering:
        if self.lookup is None:
            raise InvalidRequest("profiles are not available on this server", param=param)
        try:
            profile = self.lookup(name)
        except NotFound as e:
            raise InvalidRequest(f"unknown profile {name!r}", param=param, code="profile_not_found") from e
        self.check_compatible(profile, param=param)
        return profile

    def _receipt(self, source: str, spec: SteeringSpec | None, profile: str | None) -> AppliedSteering:
        info = self._sae_info()
        if spec is None or spec.empty:
            return AppliedSteering(source="none")
        return AppliedSteering(
            source=source,  # type: ignore[arg-type]
            profile=profile,
            mode=spec.mode,
            sae=info.sae_id if info else None,
            hook_name=info.hook_name if info else None,
            features=[SteeringFeatureIn(index=f.index, strength=f.strength) for f in spec.features],
        )

    def resolve(
        self, request: SteeringIn | None, *, model_profile: str | None = None
    ) -> tuple[SteeringSpec | None, AppliedSteering]:
        state = self.state
        special = state.steer_special_tokens
        if request is not None:
            if request.steer_special_tokens is not None:
                special = request.steer_special_tokens
            if request.profile is not None:
                p = self._profile(request.profile, "steering.profile")
                spec = SteeringSpec(p.features, p.mode, request.normalize if request.normalize is not None
                                    else p.normalize, special)
                return spec, self._receipt("profile", spec, p.name)
            if request.features is not None:
                feats = [(f.index, f.strength) for f in request.features]
                if feats:
                    _validate_features(feats, self._require_sae("steering").d_sae, "steering.features")
                spec = SteeringSpec(
                    tuple(FeatureStrength(i, s) for i, s in feats),
                    request.mode or "add",
                    bool(request.normalize),
                    special,
                )
                return (spec if feats else None), self._receipt("request", spec, None)
        if model_profile is not None:
            p = self._profile(model_profile, "model")
            spec = SteeringSpec(p.features, p.mode, p.normalize, special)
            return spec, self._receipt("model", spec, p.name)
        if state.enabled and state.features and self._sae_info() is not None:
            spec = SteeringSpec(
                tuple(FeatureStrength(i, s) for i, s in sorted(state.features.items())),
                request.mode if request is not None and request.mode else state.mode,
                state.normalize,
                special,
            )
            return spec, self._receipt("server", spec, state.profile)
        return None, AppliedSteering(source="none")
