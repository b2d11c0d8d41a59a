"""ControlService on its own: what a model, SAE, steering or profile change does to the others.

A real ProfileService (SQLite in a temporary folder) and SteeringService; the model and SAE services are small
stand-ins that only report what is loaded, so each coordination rule is checked without a model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from millm.errors import InvalidRequest, NotFound
from millm.protocol.profiles import ProfileCreate, ProfileUpdate, SaeRef, SteeringFeature
from millm.services.control import ControlService
from millm.services.load_options import LoadOptions
from millm.services.profiles import ProfileService
from millm.services.steering import NamedSteering, SaeInfo, SteeringService
from millm.store.db import Database, open_database


class Saes:
    """The attached SAE as the steering and control services see it."""

    def __init__(self) -> None:
        self.current: SaeInfo | None = SaeInfo(sae_id="sae", d_sae=64, hook_name="blocks.1.hook_resid_post",
                                               model_id="demo", layer=1)
        self.next: SaeInfo | None = None  # what attach() puts in place

    def info(self) -> SaeInfo | None:
        return self.current

    @property
    def attached(self) -> Any:
        c = self.current
        if c is None:
            return None
        return SimpleNamespace(sae_id=c.sae_id, hook_name=c.hook_name, hookpoint=SimpleNamespace(layer=c.layer),
                               sae=SimpleNamespace(cfg=SimpleNamespace(d_sae=c.d_sae)),
                               source=SimpleNamespace(repo_id="org/saes", path="layer_1", revision=None))

    async def attach(self, source: str, **kw: Any) -> Any:
        self.current = self.next
        return self.attached

    async def detach(self) -> None:
        self.current = None


class Models:
    def __init__(self, saes: Saes) -> None:
        self.saes = saes
        self.name: str | None = "demo"
        self.sae_message: str | None = None

    def served_name(self) -> str | None:
        return self.name

    async def load(self, source: str, *, options: LoadOptions, force: bool = False) -> Any:
        self.name = source
        if self.sae_message:
            self.saes.current = None
        return SimpleNamespace(sae_message=self.sae_message)

    async def unload(self) -> None:
        self.name, self.saes.current = None, None


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(data_dir=tmp_path)
    yield database
    database.close()


@pytest.fixture
def parts(db: Database) -> SimpleNamespace:
    saes = Saes()
    models = Models(saes)
    profiles = ProfileService(db.session_factory)
    names = lambda: (models.name,) if models.name else ()  # noqa: E731

    def lookup(name: str) -> NamedSteering:
        return NamedSteering.of(profiles.get(name))

    steering = SteeringService(sae_info=saes.info, lookup=lookup, model_names=names)
    control = ControlService(models=models, saes=saes, steering=steering, profiles=profiles,  # type: ignore[arg-type]
                             model_names=names, labels=lambda: {3: "caps"})
    return SimpleNamespace(saes=saes, models=models, profiles=profiles, steering=steering, control=control)


def create(name: str = "p", *, model: str = "demo", sae: str = "sae", d_sae: int = 64,
           features: tuple[tuple[int, float], ...] = ((3, 2.0),)) -> ProfileCreate:
    return ProfileCreate(name=name, model=model, sae=SaeRef(id=sae, hook_name="blocks.1.hook_resid_post", layer=1,
                                                            d_sae=d_sae),
                         features=[SteeringFeature(index=i, strength=s) for i, s in features])


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_activate_records_and_applies_only_a_profile_that_fits(parts: SimpleNamespace) -> None:
    run(parts.control.create_profile(create("p")))
    parts.profiles.create(create("other", sae="other-sae"))
    active = run(parts.control.activate_profile("p"))
    assert active.active and parts.steering.state.profile == "p" and parts.steering.state.features == {3: 2.0}
    with pytest.raises(InvalidRequest) as e:
        run(parts.control.activate_profile("other"))
    assert (e.value.code, e.value.param) == ("sae_mismatch", "sae.id")
    assert parts.profiles.get_active().name == "p" and parts.steering.state.profile == "p"  # nothing changed
    with pytest.raises(NotFound):
        run(parts.control.activate_profile("missing"))


def test_steering_set_by_hand_forgets_the_active_profile(parts: SimpleNamespace) -> None:
    run(parts.control.create_profile(create("p")))
    run(parts.control.activate_profile("p"))
    state = run(parts.control.patch_steering(features=[(4, 1.0)]))
    assert state.profile is None and state.features == {3: 2.0, 4: 1.0}
    assert parts.profiles.get_active() is None
    run(parts.control.activate_profile("p"))
    run(parts.control.set_steering(features=[(5, 1.0)]))
    assert parts.profiles.get_active() is None and parts.steering.state.features == {5: 1.0}
    parts.control.set_steering_enabled(False)
    assert not parts.steering.state.enabled and parts.steering.state.features == {5: 1.0}


def test_editing_the_active_profile_reapplies_it_or_stops_it(parts: SimpleNamespace) -> None:
    run(parts.control.create_profile(create("p")))
    run(parts.control.activate_profile("p"))
    edited = run(parts.control.update_profile("p", ProfileUpdate(features=[SteeringFeature(index=7, strength=1.0)]),
                                              if_match='"1"'))
    assert edited.active and edited.version == 2 and parts.steering.state.features == {7: 1.0}
    moved = run(parts.control.update_profile("p", ProfileUpdate(version=2, model="other/model")))
    assert not moved.active and parts.steering.state.features == {} and parts.profiles.get_active() is None
    with pytest.raises(InvalidRequest) as e:
        run(parts.control.update_profile("p", ProfileUpdate(description="x")))  # no version, no If-Match
    assert e.value.param == "version"
    with pytest.raises(InvalidRequest) as e:
        run(parts.control.update_profile("p", ProfileUpdate(description="x"), if_match="v3"))
    assert e.value.param == "If-Match"


def test_deleting_the_active_profile_clears_the_steering_but_not_another(parts: SimpleNamespace) -> None:
    run(parts.control.create_profile(create("p")))
    run(parts.control.create_profile(create("q", features=((9, 1.0),))))
    run(parts.control.activate_profile("p"))
    run(parts.control.delete_profile("q"))
    assert parts.steering.state.profile == "p"
    run(parts.control.delete_profile("p", if_match='"1"'))
    assert parts.steering.state.features == {} and parts.steering.state.profile is None


def test_importing_over_the_active_profile_reapplies_it(parts: SimpleNamespace) -> None:
    run(parts.control.create_profile(create("p")))
    run(parts.control.activate_profile("p"))
    doc = {"format": "millm.profile", "format_version": 1,
           **create("p", features=((11, 3.0),)).model_dump(mode="json")}
    result = run(parts.control.import_profiles(doc, on_conflict="replace"))
    assert result.profiles[0].active and parts.steering.state.features == {11: 3.0}


def test_an_sae_change_keeps_steering_that_fits_and_clears_what_does_not(parts: SimpleNamespace) -> None:
    run(parts.control.set_steering(features=[(10, 1.0)]))
    parts.saes.next = SaeInfo(sae_id="bigger", d_sae=128, hook_name="h", model_id="demo")
    run(parts.control.attach_sae("org/bigger"))
    assert parts.steering.state.features == {10: 1.0}  # set by hand, every index still fits
    parts.saes.next = SaeInfo(sae_id="small", d_sae=8, hook_name="h", model_id="demo")
    run(parts.control.attach_sae("org/small"))
    assert parts.steering.state.features == {}

    parts.saes.next = SaeInfo(sae_id="sae", d_sae=64, hook_name="h", model_id="demo")
    run(parts.control.attach_sae("org/sae"))
    run(parts.control.create_profile(create("p")))
    run(parts.control.activate_profile("p"))
    parts.saes.next = SaeInfo(sae_id="another", d_sae=64, hook_name="h", model_id="demo")
    run(parts.control.attach_sae("org/another"))  # same width, but the profile was made for "sae"
    assert parts.steering.state.features == {} and parts.profiles.get_active() is None


def test_a_model_change_clears_steering_when_the_sae_went_or_the_profile_no_longer_fits(
        parts: SimpleNamespace) -> None:
    run(parts.control.create_profile(create("p")))
    run(parts.control.activate_profile("p"))
    run(parts.control.load_model("demo", options=LoadOptions()))  # the same model again: still fits
    assert parts.steering.state.profile == "p"
    run(parts.control.load_model("other-model", options=LoadOptions()))  # the profile names "demo"
    assert parts.steering.state.features == {} and parts.profiles.get_active() is None

    run(parts.control.set_steering(features=[(1, 1.0)]))
    parts.models.sae_message = "SAE 'sae' was detached"
    run(parts.control.load_model("third", options=LoadOptions()))
    assert parts.steering.state.features == {}
    run(parts.control.set_steering(features=[]))
    run(parts.control.unload_model())
    assert parts.steering.state.features == {}


def test_save_steering_builds_the_profile_from_the_live_state(parts: SimpleNamespace) -> None:
    run(parts.control.set_steering(features=[(3, 2.0), (5, -1.0)], mode="clamp", scale=0.5))
    saved = run(parts.control.save_steering("saved", "from the ui"))
    assert (saved.model, saved.sae.id, saved.sae.d_sae, saved.sae.repo_id, saved.mode, saved.scale) == (
        "demo", "sae", 64, "org/saes", "clamp", 0.5)
    assert [(f.index, f.strength, f.label) for f in saved.features] == [(3, 2.0, "caps"), (5, -1.0, None)]
    run(parts.control.detach_sae())
    with pytest.raises(InvalidRequest) as e:
        run(parts.control.save_steering("again"))
    assert e.value.param == "name"
