"""Server-wide steering state, per-request steering resolution, and the one profile fit check.

Precedence for a request: its own `steering` object, then the profile named by a virtual
model id (`<model>+<profile>`), then the server-wide steering (set directly or by activating a
profile). The result is an engine `SteeringSpec` plus an `AppliedSteering` receipt that the
API echoes in the response. Indices are checked against the attached SAE's d_sae here, so a
bad index is a 400 naming the field and never reaches the worker.

`SteeringService.check_fits` is the only place that decides whether a profile fits the loaded
model and attached SAE (activation, a request's `steering.profile`, a virtual model id and the
restore at start-up all call it), with one set of error codes: `model_mismatch` (no model, or
another model), `no_sae`, `sae_mismatch` (another SAE id or d_sae) and `invalid_value` (an index
past d_sae). What happens to the server-wide steering when a model, SAE or profile changes is
decided in `millm.services.control`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

from millm.engine.types import FeatureStrength, SteeringSpec
from millm.errors import InvalidRequest, NotFound, SaeMismatch
from millm.protocol.common import SteeringMode
from millm.protocol.openai import AppliedFeature, AppliedSteering, SteeringIn
from millm.services.steering_hash import canonical_form, steering_hash


@dataclass(frozen=True)
class SaeInfo:
    sae_id: str
    d_sae: int
    hook_name: str
    model_id: str
    layer: int | None = None
    architecture: str | None = None


@dataclass(frozen=True)
class NamedSteering:
    """A profile, as far as steering is concerned."""

    name: str
    model: str | None
    sae_id: str | None
    d_sae: int | None
    mode: SteeringMode
    normalize: bool
    features: tuple[FeatureStrength, ...]
    labels: tuple[str | None, ...] = ()
    scale: float | None = None  # the profile's default intensity (None: 1)
    scale_min: float | None = None  # the range a request's steering.scale must stay in (None: 0 / the server max)
    scale_max: float | None = None

    @classmethod
    def of(cls, profile: Any) -> NamedSteering:
        """A stored profile (`ProfilePublic`, `ProfileCreate` or `ProfileDocument`) as steering."""
        return cls(
            name=profile.name, model=profile.model, sae_id=profile.sae.id, d_sae=profile.sae.d_sae,
            mode=profile.mode, normalize=profile.normalize,
            features=tuple(FeatureStrength(f.index, f.strength) for f in profile.features),
            labels=tuple(f.label for f in profile.features),
            scale=profile.scale, scale_min=profile.scale_min, scale_max=profile.scale_max,
        )


class ProfileLookup(Protocol):
    def __call__(self, name: str) -> NamedSteering: ...


@dataclass
class ServerSteering:
    enabled: bool = True
    mode: SteeringMode = "add"
    normalize: bool = False
    steer_special_tokens: bool = True
    features: dict[int, float] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)
    profile: str | None = None
    scale: float = 1.0


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
                 model_names: Callable[[], tuple[str, ...]] | None = None, max_scale: float = 10.0,
                 labels: Callable[[], dict[int, str]] | None = None, evidence_default: bool = False) -> None:
        self._sae_info = sae_info
        self.evidence_default = evidence_default
        self.max_scale = max_scale
        self._labels = labels
        self._version = 0  # bumped on every change of the server-wide steering
        self.lookup = lookup
        # The ids a profile may name the loaded model by (the served name and the loaded id).
        self._model_names = model_names
        self._state = ServerSteering()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ server-wide state

    @property
    def version(self) -> int:
        """A counter of server-wide steering changes (a receipt compares it at the start and end of a request)."""
        return self._version

    @property
    def state(self) -> ServerSteering:
        with self._lock:
            return replace(self._state, features=dict(self._state.features), labels=dict(self._state.labels))

    def require_sae(self, param: str) -> SaeInfo:
        return self._require_sae(param)

    def _require_sae(self, param: str) -> SaeInfo:
        info = self._sae_info()
        if info is None:
            raise InvalidRequest("no SAE is attached: attach one before steering", param=param, code="no_sae")
        return info

    def set(
        self,
        *,
        features: list[tuple[int, float]],
        mode: SteeringMode = "add",
        normalize: bool = False,
        steer_special_tokens: bool = True,
        labels: dict[int, str] | None = None,
        profile: str | None = None,
        scale: float = 1.0,
    ) -> ServerSteering:
        indices = [i for i, _ in features]
        if len(set(indices)) != len(indices):
            raise InvalidRequest("each feature index may appear once", param="features")
        if features:
            _validate_features(features, self._require_sae("features").d_sae, "features")
        self._check_scale(scale, None, param="scale")
        with self._lock:
            enabled = self._state.enabled
            self._state = ServerSteering(
                enabled=enabled, mode=mode, normalize=normalize, steer_special_tokens=steer_special_tokens,
                features={i: s for i, s in features}, labels=dict(labels or {}), profile=profile, scale=scale,
            )
            self._version += 1
        return self.state

    def patch(self, *, features: list[tuple[int, float | None]], mode: SteeringMode | None = None,
              scale: float | None = None) -> ServerSteering:
        """Update strengths; a strength of None removes that feature."""
        present = [(i, s) for i, s in features if s is not None]
        if present:
            _validate_features(present, self._require_sae("features").d_sae, "features")
        if scale is not None:
            self._check_scale(scale, None, param="scale")
        with self._lock:
            self._version += 1
            if scale is not None:
                self._state.scale = scale
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
            self._version += 1
        return self.state

    def set_enabled(self, enabled: bool) -> ServerSteering:
        with self._lock:
            if self._state.enabled != enabled:
                self._version += 1
            self._state.enabled = enabled
        return self.state

    def activate(self, profile: NamedSteering) -> ServerSteering:
        """Make `profile` the server-wide steering; refused (400) unless it fits (see `check_fits`)."""
        self.check_fits(profile)
        return self.set(
            features=[(f.index, f.strength) for f in profile.features],
            mode=profile.mode,
            normalize=profile.normalize,
            labels={f.index: lab for f, lab in zip(profile.features, profile.labels, strict=False) if lab},
            profile=profile.name,
            scale=profile.scale if profile.scale is not None else 1.0,
        )

    def fits(self) -> bool:
        """Whether the server-wide steering still fits the attached SAE (after a model or SAE change): no
        features, or an SAE whose d_sae holds them all and, for steering that came from a profile, that
        profile still fits."""
        state = self.state
        if not state.features:
            return True
        info = self._sae_info()
        if info is None or any(i >= info.d_sae for i in state.features):
            return False
        if state.profile is not None and self.lookup is not None:
            try:
                self.check_fits(self.lookup(state.profile))
            except (InvalidRequest, NotFound):
                return False
        return True

    # ------------------------------------------------------------------ per request

    def check_fits(self, profile: NamedSteering, *, param: str | None = None) -> None:
        """Refuse (400) a profile that does not fit the loaded model and attached SAE.

        The only compatibility check. `param` names where the caller named the profile (`steering.profile`,
        `model`); None (activation) names the profile's own field that does not fit (`model`, `sae.id`,
        `sae.d_sae`, `features[i].index`). Codes: `model_mismatch`, `no_sae`, `sae_mismatch`, `invalid_value`.
        """
        def where(field: str) -> str:
            return param if param is not None else field

        name = profile.name
        names = self._model_names() if self._model_names is not None else ()
        info = self._sae_info()
        if not names and info is not None:
            names = (info.model_id,)
        if profile.model is not None and not names:
            raise InvalidRequest(f"profile {name!r} needs model {profile.model!r}, but no model is loaded",
                                 param=where("model"), code="model_mismatch")
        if profile.model is not None and profile.model not in names:
            raise InvalidRequest(f"profile {name!r} was made for model {profile.model!r}, but {names[0]!r} is "
                                 "loaded", param=where("model"), code="model_mismatch")
        if info is None:
            raise InvalidRequest(f"profile {name!r} needs SAE {profile.sae_id!r}, but no SAE is attached",
                                 param=where("sae.id"), code="no_sae")
        if profile.sae_id is not None and profile.sae_id != info.sae_id:
            raise SaeMismatch(f"profile {name!r} was made for SAE {profile.sae_id!r}, but {info.sae_id!r} is "
                              "attached", param=where("sae.id"))
        if profile.d_sae is not None and profile.d_sae != info.d_sae:
            raise SaeMismatch(f"profile {name!r} expects d_sae={profile.d_sae}, but SAE {info.sae_id!r} has "
                              f"{info.d_sae}", param=where("sae.d_sae"))
        for i, f in enumerate(profile.features):
            if not 0 <= f.index < info.d_sae:
                raise InvalidRequest(f"profile {name!r}: feature index {f.index} is out of range for SAE "
                                     f"{info.sae_id!r} (d_sae={info.d_sae})", param=where(f"features[{i}].index"))
            if not math.isfinite(f.strength):
                raise InvalidRequest(f"profile {name!r}: feature {f.index} has a strength that is not finite",
                                     param=where(f"features[{i}].strength"))

    def fits_profile(self, profile: NamedSteering) -> bool:
        """`check_fits` as a yes/no."""
        try:
            self.check_fits(profile)
        except InvalidRequest:
            return False
        return True

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
        self.check_fits(profile, param=param)
        return profile

    def _check_scale(self, scale: float, profile: NamedSteering | None, *, param: str) -> None:
        low = profile.scale_min if profile is not None and profile.scale_min is not None else 0.0
        high = profile.scale_max if profile is not None and profile.scale_max is not None else self.max_scale
        if not (math.isfinite(scale) and low <= scale <= high):
            where = f"profile {profile.name!r}'s range" if profile is not None and (
                profile.scale_min is not None or profile.scale_max is not None) else "the allowed range"
            raise InvalidRequest(f"scale {scale} is outside {where} [{low}, {high}]", param=param,
                                 code="scale_out_of_range")

    def evidence_value(self) -> str:
        """What the evidence's before/after numbers are, for the attached SAE."""
        info = self._sae_info()
        if info is not None and info.architecture == "topk":
            return ("the feature's activation after top-k selection (the encoder's ReLU output if the feature is "
                    "among the token's k largest, else 0)")
        return "the feature's activation (the SAE encoder's output for that feature)"

    def label(self, index: int) -> str | None:
        return self._labels().get(index) if self._labels is not None else None

    def _applied(self, source: str, features: tuple[FeatureStrength, ...], *, mode: SteeringMode, normalize: bool,
                 special: bool, scale: float, profile: str | None,
                 evidence: bool = False) -> tuple[SteeringSpec | None, AppliedSteering]:
        """The engine spec (strengths multiplied by the scale; None when nothing is applied) and its receipt."""
        if not features:
            return None, AppliedSteering(source="none")
        info = self._sae_info()
        applied = tuple(FeatureStrength(f.index, f.strength * scale) for f in features)
        spec = SteeringSpec(applied, mode, normalize, special, evidence) if scale != 0 else None
        digest = None
        if spec is not None and info is not None:
            digest = steering_hash(canonical_form(
                sae=info.sae_id, d_sae=info.d_sae, hook_name=info.hook_name, layer=info.layer, mode=mode,
                normalize=normalize, steer_special_tokens=special,
                features=[(f.index, f.strength) for f in applied]))
        receipt = AppliedSteering(
            source=source,  # type: ignore[arg-type]
            profile=profile, mode=mode, sae=info.sae_id if info else None,
            hook_name=info.hook_name if info else None, layer=info.layer if info else None,
            d_sae=info.d_sae if info else None, normalize=normalize and mode == "add", steer_special_tokens=special,
            scale=scale, hash=digest,
            features=[AppliedFeature(index=a.index, strength=a.strength,
                                     raw_strength=None if scale == 1 else f.strength, label=self.label(f.index))
                      for f, a in zip(features, applied, strict=True)],
        )
        return spec, receipt

    def resolve(
        self, request: SteeringIn | None, *, model_profile: str | None = None
    ) -> tuple[SteeringSpec | None, AppliedSteering]:
        state = self.state
        special = state.steer_special_tokens
        scale = request.scale if request is not None else None
        evidence = (bool(request.evidence) if request is not None and request.evidence is not None
                    else self.evidence_default)
        if request is not None:
            if request.steer_special_tokens is not None:
                special = request.steer_special_tokens
            if request.profile is not None:
                p = self._profile(request.profile, "steering.profile")
                return self._from_profile(p, "profile", scale, special, evidence,
                                          request.normalize if request.normalize is not None else p.normalize)
            if request.features is not None:
                feats = [(f.index, f.strength) for f in request.features]
                if feats:
                    _validate_features(feats, self._require_sae("steering").d_sae, "steering.features")
                scale = 1.0 if scale is None else scale
                self._check_scale(scale, None, param="steering.scale")
                return self._applied("request", tuple(FeatureStrength(i, s) for i, s in feats),
                                     mode=request.mode or "add", normalize=bool(request.normalize), special=special,
                                     scale=scale, profile=None, evidence=evidence)
        if model_profile is not None:
            p = self._profile(model_profile, "model")
            return self._from_profile(p, "model", scale, special, evidence, p.normalize)
        if state.enabled and state.features and self._sae_info() is not None:
            scale = state.scale if scale is None else scale
            self._check_scale(scale, None, param="steering.scale")
            return self._applied(
                "server", tuple(FeatureStrength(i, s) for i, s in sorted(state.features.items())),
                mode=request.mode if request is not None and request.mode else state.mode,
                normalize=state.normalize, special=special, scale=scale, profile=state.profile, evidence=evidence)
        return None, AppliedSteering(source="none")

    def _from_profile(self, p: NamedSteering, source: str, scale: float | None, special: bool, evidence: bool,
                      normalize: bool) -> tuple[SteeringSpec | None, AppliedSteering]:
        scale = (p.scale if p.scale is not None else 1.0) if scale is None else scale
        self._check_scale(scale, p, param="steering.scale")
        return self._applied(source, p.features, mode=p.mode, normalize=normalize, special=special, scale=scale,
                             profile=p.name, evidence=evidence)
