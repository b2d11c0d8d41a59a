"""SteeringService on its own: request precedence, the one profile fit check, and what still fits after a change.

No model, no server: the service sees the attached SAE, the loaded model's names and the stored profiles through
the callables the runtime gives it, so each rule is checked directly.
"""

from __future__ import annotations

from typing import Any

import pytest

from millm.engine.types import FeatureStrength
from millm.errors import InvalidRequest, MillmError, NotFound, SaeMismatch
from millm.protocol.openai import SteeringIn
from millm.services.steering import NamedSteering, SaeInfo, SteeringService

SAE = SaeInfo(sae_id="demo-sae", d_sae=64, hook_name="blocks.1.hook_resid_post", model_id="demo", layer=1)


def profile(name: str = "p", *, model: str | None = "demo", sae_id: str | None = "demo-sae", d_sae: int | None = 64,
            features: tuple[tuple[int, float], ...] = ((3, 2.0),), **kw: Any) -> NamedSteering:
    return NamedSteering(name=name, model=model, sae_id=sae_id, d_sae=d_sae, mode=kw.pop("mode", "add"),
                         normalize=kw.pop("normalize", False),
                         features=tuple(FeatureStrength(i, s) for i, s in features), **kw)


class World:
    """What the service can see: an SAE (or none), the model's names and the stored profiles."""

    def __init__(self) -> None:
        self.sae: SaeInfo | None = SAE
        self.names: tuple[str, ...] = ("demo",)
        self.profiles: dict[str, NamedSteering] = {}

    def service(self, **kw: Any) -> SteeringService:
        def lookup(name: str) -> NamedSteering:
            if name not in self.profiles:
                raise NotFound(f"no profile {name}")
            return self.profiles[name]

        return SteeringService(sae_info=lambda: self.sae, lookup=lookup, model_names=lambda: self.names, **kw)


@pytest.fixture
def world() -> World:
    return World()


def features(spec: Any) -> list[tuple[int, float]]:
    return [(f.index, f.strength) for f in spec.features]


# ---------------------------------------------------------------------------------------------- precedence


def test_request_beats_virtual_model_beats_server_wide(world: World) -> None:
    world.profiles = {"by-model": profile("by-model", features=((1, 1.0),)),
                      "by-name": profile("by-name", features=((2, 2.0),))}
    svc = world.service()
    svc.set(features=[(5, 5.0)])

    spec, receipt = svc.resolve(None)
    assert features(spec) == [(5, 5.0)] and receipt.source == "server"
    spec, receipt = svc.resolve(None, model_profile="by-model")
    assert features(spec) == [(1, 1.0)] and (receipt.source, receipt.profile) == ("model", "by-model")
    spec, receipt = svc.resolve(SteeringIn(profile="by-name"), model_profile="by-model")
    assert features(spec) == [(2, 2.0)] and (receipt.source, receipt.profile) == ("profile", "by-name")
    spec, receipt = svc.resolve(SteeringIn(features=[{"index": 7, "strength": 7.0}]), model_profile="by-model")
    assert features(spec) == [(7, 7.0)] and receipt.source == "request"
    # An empty feature list is the request's own choice: no steering at all, whatever else is set.
    spec, receipt = svc.resolve(SteeringIn(features=[]), model_profile="by-model")
    assert spec is None and receipt.source == "none"


def test_server_wide_steering_applies_only_when_enabled_and_an_sae_is_attached(world: World) -> None:
    svc = world.service()
    svc.set(features=[(5, 1.0)])
    svc.set_enabled(False)
    assert svc.resolve(None)[0] is None
    svc.set_enabled(True)
    assert features(svc.resolve(None)[0]) == [(5, 1.0)]
    world.sae = None
    assert svc.resolve(None) == (None, svc.resolve(None)[1]) and svc.resolve(None)[1].source == "none"


def test_scale_multiplies_strengths_and_a_profile_range_bounds_it(world: World) -> None:
    world.profiles = {"p": profile(features=((3, 2.0),), scale=0.5, scale_min=0.25, scale_max=2.0)}
    svc = world.service(max_scale=4.0)
    spec, receipt = svc.resolve(SteeringIn(profile="p"))
    assert features(spec) == [(3, 1.0)] and receipt.scale == 0.5  # the profile's default scale
    spec, _ = svc.resolve(SteeringIn(profile="p", scale=2.0))
    assert features(spec) == [(3, 4.0)]
    with pytest.raises(InvalidRequest) as e:
        svc.resolve(SteeringIn(profile="p", scale=3.0))
    assert (e.value.param, e.value.code) == ("steering.scale", "scale_out_of_range")
    with pytest.raises(InvalidRequest):
        svc.resolve(SteeringIn(features=[{"index": 1, "strength": 1.0}], scale=4.5))  # past the server's max
    assert svc.resolve(SteeringIn(features=[{"index": 1, "strength": 1.0}], scale=0))[0] is None


def test_request_indices_are_checked_against_the_attached_sae(world: World) -> None:
    svc = world.service()
    with pytest.raises(InvalidRequest) as e:
        svc.resolve(SteeringIn(features=[{"index": 1, "strength": 1.0}, {"index": 64, "strength": 1.0}]))
    assert e.value.param == "steering.features[1].index"
    world.sae = None
    with pytest.raises(InvalidRequest) as e:
        svc.resolve(SteeringIn(features=[{"index": 1, "strength": 1.0}]))
    assert e.value.code == "no_sae"


def test_unknown_profile_names_the_field_it_came_from(world: World) -> None:
    svc = world.service()
    with pytest.raises(InvalidRequest) as e:
        svc.resolve(SteeringIn(profile="nope"))
    assert (e.value.param, e.value.code) == ("steering.profile", "profile_not_found")
    with pytest.raises(InvalidRequest) as e:
        svc.resolve(None, model_profile="nope")
    assert (e.value.param, e.value.code) == ("model", "profile_not_found")


def test_server_wide_set_refuses_repeated_and_out_of_range_indices(world: World) -> None:
    svc = world.service()
    with pytest.raises(InvalidRequest) as e:
        svc.set(features=[(1, 1.0), (1, 2.0)])
    assert e.value.param == "features"
    with pytest.raises(InvalidRequest) as e:
        svc.set(features=[(1, 1.0), (99, 2.0)])
    assert e.value.param == "features[1].index"
    assert svc.state.features == {}


# ---------------------------------------------------------------------------------------------- the fit check


@pytest.mark.parametrize(("changes", "code", "field", "error"), [
    ({"model": "other/model"}, "model_mismatch", "model", InvalidRequest),
    ({"sae_id": "other-sae"}, "sae_mismatch", "sae.id", SaeMismatch),
    ({"d_sae": 128}, "sae_mismatch", "sae.d_sae", SaeMismatch),
    ({"features": ((1, 1.0), (64, 1.0))}, "invalid_value", "features[1].index", InvalidRequest),
    ({"features": ((1, float("inf")),)}, "invalid_value", "features[0].strength", InvalidRequest),
])
def test_one_fit_check_one_set_of_codes(world: World, changes: dict[str, Any], code: str, field: str,
                                        error: type[MillmError]) -> None:
    """Activation names the profile's own field; a request names where it named the profile; the code is the same."""
    world.profiles = {"p": profile(**changes)}
    svc = world.service()
    with pytest.raises(error) as e:
        svc.activate(world.profiles["p"])
    assert (e.value.code, e.value.param, e.value.status) == (code, field, 400) and "'p'" in e.value.message
    for request, model_profile, param in ((SteeringIn(profile="p"), None, "steering.profile"), (None, "p", "model")):
        with pytest.raises(error) as e:
            svc.resolve(request, model_profile=model_profile)
        assert (e.value.code, e.value.param) == (code, param)
    assert svc.state.features == {} and not svc.fits_profile(world.profiles["p"])


def test_fit_check_with_nothing_loaded(world: World) -> None:
    svc = world.service()
    world.sae = None
    with pytest.raises(InvalidRequest) as e:
        svc.check_fits(profile())
    assert (e.value.code, e.value.param) == ("no_sae", "sae.id")
    world.names = ()
    with pytest.raises(InvalidRequest) as e:
        svc.check_fits(profile())
    assert (e.value.code, e.value.param) == ("model_mismatch", "model") and "no model is loaded" in e.value.message


def test_a_profile_may_name_the_model_by_any_of_its_names(world: World) -> None:
    world.names = ("served-name", "org/repo")
    svc = world.service()
    for name in world.names:
        svc.check_fits(profile(model=name))
    assert svc.fits_profile(profile(model=None, sae_id=None, d_sae=None))  # an imported preset naming neither


def test_activate_sets_the_server_steering_with_the_profile_labels_and_scale(world: World) -> None:
    svc = world.service()
    state = svc.activate(profile(features=((3, 2.0), (4, -1.0)), labels=("caps", None), scale=0.5))
    assert (state.features, state.labels, state.profile, state.scale) == ({3: 2.0, 4: -1.0}, {3: "caps"}, "p", 0.5)


# ---------------------------------------------------------------------------------------------- after a change


def test_fits_after_a_model_or_sae_change(world: World) -> None:
    world.profiles = {"p": profile(features=((3, 2.0),))}
    svc = world.service()
    assert svc.fits()  # nothing set
    svc.activate(world.profiles["p"])
    assert svc.fits()
    world.sae = SaeInfo(sae_id="demo-sae", d_sae=4, hook_name="h", model_id="demo")  # index 3 still fits, d_sae not
    assert not svc.fits()
    world.sae = SaeInfo(sae_id="another", d_sae=64, hook_name="h", model_id="demo")  # the profile's SAE is gone
    assert not svc.fits()
    world.sae = SAE
    world.names = ("another-model",)
    assert not svc.fits()
    world.names = ("demo",)
    svc.set(features=[(10, 1.0)])  # set by hand: no profile to check, only the indices
    world.sae = SaeInfo(sae_id="another", d_sae=11, hook_name="h", model_id="demo")
    assert svc.fits()
    world.sae = SaeInfo(sae_id="another", d_sae=10, hook_name="h", model_id="demo")
    assert not svc.fits()
    world.sae = None
    assert not svc.fits()
