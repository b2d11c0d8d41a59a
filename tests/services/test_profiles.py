"""ProfileService: CRUD, activation, model/SAE validation, export/import in every format."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from millm.errors import Conflict, InvalidRequest, NotFound
from millm.protocol.profiles import ProfileCreate, ProfileUpdate, SaeRef, SteeringFeature
from millm.services.profiles import ProfileService
from millm.store.db import Database, open_database

SAE = SaeRef(id="millm-demo-sae", hook_name="blocks.3.hook_resid_post", layer=3, d_sae=2048)


def make_create(name: str = "yelling-demo", **changes: Any) -> ProfileCreate:
    fields: dict[str, Any] = {
        "name": name,
        "description": "shouts",
        "model": "millm-demo",
        "sae": SAE,
        "features": [SteeringFeature(index=12, strength=8.0, label="CAPS")],
    }
    return ProfileCreate(**{**fields, **changes})


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(data_dir=tmp_path / "a")
    yield database
    database.close()


@pytest.fixture
def service(db: Database) -> ProfileService:
    return ProfileService(db.session_factory)


def snapshot(service: ProfileService) -> dict[str, Any]:
    return service.export_all().model_dump(mode="json")


# ---------------------------------------------------------------------------------------
# CRUD


def test_crud_round_trip(service: ProfileService) -> None:
    created = service.create(make_create())
    assert (created.name, created.version, created.active) == ("yelling-demo", 1, False)
    assert service.get("yelling-demo") == created

    updated = service.update("yelling-demo", ProfileUpdate(version=1, description="louder", mode="clamp"))
    assert (updated.version, updated.description, updated.mode) == (2, "louder", "clamp")
    assert updated.features == created.features and updated.sae == created.sae

    listing = service.list()
    assert listing.count == 1 and listing.data == [updated]
    assert service.list(model_id="other").count == 0

    assert service.delete("yelling-demo", version=2) is False
    with pytest.raises(NotFound):
        service.get("yelling-demo")


def test_update_can_rename_and_replace_features(service: ProfileService) -> None:
    service.create(make_create("calm"))
    out = service.update(
        "calm", ProfileUpdate(version=1, name="serene", features=[SteeringFeature(index=3, strength=-2.0)])
    )
    assert out.name == "serene" and [f.index for f in out.features] == [3]
    with pytest.raises(NotFound):
        service.get("calm")


def test_stale_update_is_a_conflict_not_a_lost_update(service: ProfileService) -> None:
    service.create(make_create("calm"))
    service.update("calm", ProfileUpdate(version=1, description="first"))
    with pytest.raises(Conflict) as info:
        service.update("calm", ProfileUpdate(version=1, description="second"))
    assert info.value.status == 409 and info.value.param == "version"
    assert service.get("calm").description == "first"


def assert_concurrent_edits_one_wins(service: ProfileService) -> None:
    """Four threads update version 1 of one profile at once: exactly one succeeds and the rest get a Conflict.
    Shared with the PostgreSQL tests."""
    service.create(make_create("calm"))
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def edit(i: int) -> None:
        barrier.wait()
        try:
            service.update("calm", ProfileUpdate(version=1, description=f"edit {i}"))
            outcomes.append("ok")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=edit, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "ok"]
    assert service.get("calm").version == 2


def test_concurrent_edits_one_wins_one_gets_409(service: ProfileService) -> None:
    assert_concurrent_edits_one_wins(service)


def test_create_checks_indices_against_d_sae_and_repeats(service: ProfileService) -> None:
    features = [SteeringFeature(index=1, strength=1.0), SteeringFeature(index=2048, strength=1.0),
                SteeringFeature(index=1, strength=2.0)]
    with pytest.raises(InvalidRequest) as info:
        service.create(make_create(features=features))
    assert info.value.param == "features[1].index"
    assert "2048 is out of range" in info.value.message and "features[2].index" in info.value.message
    assert service.list().count == 0


def test_update_with_smaller_sae_rechecks_features(service: ProfileService) -> None:
    service.create(make_create("calm"))
    with pytest.raises(InvalidRequest) as info:
        service.update("calm", ProfileUpdate(version=1, sae=SAE.model_copy(update={"d_sae": 8})))
    assert info.value.param == "features[0].index"


def test_update_with_explicit_null_names_the_field(service: ProfileService) -> None:
    service.create(make_create("calm"))
    with pytest.raises(InvalidRequest) as info:
        service.update("calm", ProfileUpdate.model_validate({"version": 1, "model": None}))
    assert info.value.param == "model"


def test_duplicate_name_conflict_and_duplicate(service: ProfileService) -> None:
    service.create(make_create("calm"))
    with pytest.raises(Conflict):
        service.create(make_create("calm"))
    copy = service.duplicate("calm", new_name="calm-2")
    assert copy.features == service.get("calm").features and copy.description == "shouts"
    with pytest.raises(InvalidRequest) as info:
        service.duplicate("calm", new_name="bad+name")
    assert info.value.param == "name"
    with pytest.raises(Conflict):
        service.duplicate("calm", new_name="calm-2")


def test_activate_deactivate_and_delete_active(service: ProfileService) -> None:
    service.create(make_create("calm"))
    service.create(make_create("ocean"))
    assert service.get_active() is None
    assert service.activate("calm").active
    assert [p.active for p in service.list().data] == [True, False]
    assert service.get("calm").active
    service.activate("ocean")
    assert service.get_active().name == "ocean"  # type: ignore[union-attr]
    service.deactivate()
    assert service.get_active() is None
    service.activate("calm")
    assert service.delete("calm") is True
    assert service.get_active() is None
    with pytest.raises(NotFound):
        service.activate("calm")


def test_active_profile_survives_reopen(tmp_path: Path) -> None:
    db = open_database(data_dir=tmp_path)
    ProfileService(db.session_factory).create(make_create("calm"))
    ProfileService(db.session_factory).activate("calm")
    db.close()
    db = open_database(data_dir=tmp_path)
    active = ProfileService(db.session_factory).get_active()
    db.close()
    assert active is not None and active.name == "calm" and active.features[0].index == 12


# ---------------------------------------------------------------------------------------
# Export / import (miLLM format)


def fill(service: ProfileService) -> None:
    full_sae = SaeRef(
        id="gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical", hook_name="blocks.12.hook_resid_post",
        layer=12, d_sae=16384, repo_id="google/gemma-scope-2b-pt-res", path="layer_12/width_16k/average_l0_82",
        revision="main", release="gemma-scope-2b-pt-res-canonical", sae_id="layer_12/width_16k/canonical",
    )
    service.create(make_create("yelling-demo"))
    service.create(make_create(
        "ocean", description="Ünïcode ✓ waves", model="google/gemma-2-2b", sae=full_sae, mode="clamp", normalize=True,
        features=[SteeringFeature(index=16383, strength=-0.125, label=None), SteeringFeature(index=0, strength=1e-9)],
    ))
    service.create(make_create("empty", features=[]))
    service.update("ocean", ProfileUpdate(version=1, description="edited"))


def test_export_import_round_trip_is_lossless(service: ProfileService, tmp_path: Path) -> None:
    fill(service)
    exported = service.export_all().model_dump_json()
    other_db = open_database(data_dir=tmp_path / "b")
    other = ProfileService(other_db.session_factory)
    result = other.import_document(exported.encode())
    assert result.source_format == "millm.profiles"
    assert sorted(p.name for p in result.profiles) == ["empty", "ocean", "yelling-demo"]
    assert other.export_all().model_dump_json() == exported
    assert other.get("ocean").version == 2
    other_db.close()


def test_export_one_round_trip(service: ProfileService, tmp_path: Path) -> None:
    fill(service)
    document = service.export_one("ocean").model_dump(mode="json")
    assert document["format"] == "millm.profile" and document["format_version"] == 1
    service.delete("ocean")
    result = service.import_document(json.dumps(document))
    assert result.source_format == "millm.profile"
    assert service.export_one("ocean").model_dump(mode="json") == document


def test_minimal_document_from_the_spec_imports(service: ProfileService) -> None:
    doc = {
        "format": "millm.profile", "format_version": 1, "name": "yelling-demo", "description": "...",
        "model": "millm-demo",
        "sae": {"id": "millm-demo-sae", "hook_name": "blocks.3.hook_resid_post", "layer": 3, "d_sae": 2048},
        "mode": "add", "normalize": False, "features": [{"index": 12, "strength": 8.0, "label": "CAPS"}],
    }
    out = service.import_document(doc).profiles[0]
    assert (out.version, out.sae.repo_id, out.features[0].label) == (1, None, "CAPS")


def valid_bundle(service: ProfileService) -> dict[str, Any]:
    fill(service)
    bundle = service.export_all().model_dump(mode="json")
    for doc in bundle["profiles"]:
        doc["name"] = "new-" + doc["name"]
    return bundle


MALFORMED: list[tuple[str, Any, str, str]] = [
    ("bad json", b'{"format": "millm.profile", ', "", "invalid JSON at line 1"),
    ("not utf-8", b"\xff\xfe", "", "not UTF-8"),
    ("unknown document", {"hello": 1}, "format", "unrecognized profile document"),
    ("wrong format", {"format": "millm.other", "format_version": 1}, "format", "unknown format"),
    ("future version", {"format": "millm.profiles", "format_version": 2, "profiles": []}, "format_version", "unsupported version 2"),
]


@pytest.mark.parametrize(("case", "raw", "param", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_documents_get_a_clear_error(
    service: ProfileService, case: str, raw: Any, param: str, message: str
) -> None:
    fill(service)
    before = snapshot(service)
    with pytest.raises(InvalidRequest) as info:
        service.import_document(raw)
    assert message in info.value.message
    assert (info.value.param or "") == param
    assert snapshot(service) == before


def _break(bundle: dict[str, Any], case: str) -> str | dict[str, Any]:
    docs = bundle["profiles"]
    if case == "wrong types":
        docs[1]["features"][0]["index"] = "12"
        docs[2]["normalize"] = "yes"
    elif case == "index >= d_sae":
        docs[2]["features"].append({"index": 2048, "strength": 1.0, "label": None})
    elif case == "nan strength":
        docs[2]["features"][0]["strength"] = float("nan")
        return json.dumps(bundle)  # Python writes the NaN token, as a sloppy exporter would
    elif case == "infinite strength":
        # A sentinel no timestamp or id can contain ("8.0" could: "12:08.0…"), swapped for the token.
        docs[2]["features"][0]["strength"] = 123456.25
        text = json.dumps(bundle)
        assert text.count("123456.25") == 1
        return text.replace("123456.25", "Infinity")
    elif case == "unknown field":
        docs[1]["sae"]["width"] = 3
    elif case == "bad name":
        docs[2]["name"] = "millm-demo+calm"
    elif case == "duplicate name in document":
        docs[2]["name"] = docs[0]["name"]
    return bundle


BROKEN = [
    ("wrong types", "profiles[1].features[0].index", ["profiles[1].features[0].index: must be an integer",
                                                       "profiles[2].normalize: must be true or false"]),
    ("index >= d_sae", "profiles[2].features[1].index", ["2048 is out of range: SAE 'millm-demo-sae' has d_sae 2048"]),
    ("nan strength", "profiles[2].features[0].strength", ["profiles[2].features[0].strength: must be finite"]),
    ("infinite strength", "profiles[2].features[0].strength", ["strength: must be finite"]),
    ("unknown field", "profiles[1].sae.width", ["profiles[1].sae.width: unknown field"]),
    ("bad name", "profiles[2].name", ["must be URL-safe"]),
    ("duplicate name in document", "profiles[2].name", ["duplicate name 'new-empty'"]),
]


@pytest.mark.parametrize(("case", "param", "fragments"), BROKEN, ids=[b[0] for b in BROKEN])
def test_invalid_bundles_name_each_bad_field_and_change_nothing(
    service: ProfileService, case: str, param: str, fragments: list[str]
) -> None:
    bundle = valid_bundle(service)
    before = snapshot(service)
    with pytest.raises(InvalidRequest) as info:
        service.import_document(_break(bundle, case))
    assert (info.value.param or "").startswith(param)
    for fragment in fragments:
        assert fragment in info.value.message
    assert snapshot(service) == before


def test_existing_names_conflict_and_change_nothing(service: ProfileService) -> None:
    bundle = valid_bundle(service)
    bundle["profiles"][1]["name"] = "ocean"
    before = snapshot(service)
    with pytest.raises(Conflict) as info:
        service.import_document(bundle)
    assert "ocean" in info.value.message and info.value.status == 409
    assert snapshot(service) == before


def test_on_conflict_rename(service: ProfileService) -> None:
    fill(service)
    service.create(make_create("ocean-2"))
    result = service.import_document(service.export_all().model_dump(), on_conflict="rename")
    assert result.renamed == {"empty": "empty-2", "ocean": "ocean-3", "ocean-2": "ocean-2-2", "yelling-demo": "yelling-demo-2"}
    assert service.get("ocean-3").features == service.get("ocean").features


def test_on_conflict_replace_keeps_id_and_bumps_version(service: ProfileService) -> None:
    fill(service)
    doc = service.export_one("ocean").model_dump(mode="json")
    doc["features"] = [{"index": 5, "strength": 2.0, "label": "new"}]
    before = service.get("ocean")
    service.activate("ocean")
    result = service.import_document(doc, on_conflict="replace")
    after = service.get("ocean")
    assert result.replaced == ["ocean"] and not result.renamed
    assert (after.id, after.version, after.active) == (before.id, before.version + 1, True)
    assert after.features[0].label == "new"


def test_name_override_and_bad_on_conflict(service: ProfileService) -> None:
    fill(service)
    doc = service.export_one("ocean").model_dump(mode="json")
    assert service.import_document(doc, name="ocean-copy").profiles[0].name == "ocean-copy"
    with pytest.raises(InvalidRequest) as info:
        service.import_document(doc, on_conflict="merge")  # type: ignore[arg-type]
    assert info.value.param == "on_conflict"
    with pytest.raises(InvalidRequest) as info:
        service.import_document(service.export_all().model_dump(), name="x")
    assert info.value.param == "name"


def test_d_sae_resolver_checks_the_live_sae(service: ProfileService) -> None:
    doc = make_create("calm").model_dump(mode="json") | {"format": "millm.profile", "format_version": 1}
    with pytest.raises(InvalidRequest) as info:
        service.import_document(doc, d_sae_resolver=lambda model, sae: 8 if sae == "millm-demo-sae" else None)
    assert info.value.param == "sae.d_sae"
    assert "features[0].index: 12 is out of range" in info.value.message
    assert service.import_document(doc, d_sae_resolver=lambda model, sae: None).profiles[0].name == "calm"


# ---------------------------------------------------------------------------------------
# Neuronpedia and Goodfire


def neuronpedia_preset(name: str = "Golden Gate Bridge", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "features": [
            {"modelId": "gemma-2-2b", "layer": "20-gemmascope-res-16k", "index": 3124, "strength": 40.5,
             "explanation": "the Golden Gate Bridge"},
            {"modelId": "gemma-2-2b", "layer": "20-gemmascope-res-16k", "index": 77, "strength": -10},
        ],
        "isUserVector": False,
        **extra,
    }


def test_neuronpedia_feature_preset_mapping(service: ProfileService) -> None:
    result = service.import_document(json.dumps(neuronpedia_preset(steerMethod="SIMPLE_ADDITIVE")))
    assert result.source_format == "neuronpedia"
    profile = result.profiles[0]
    assert (profile.name, profile.description, profile.model, profile.mode) == (
        "Golden-Gate-Bridge", "Golden Gate Bridge", "gemma-2-2b", "add")
    assert profile.sae == SaeRef(id="20-gemmascope-res-16k", hook_name="blocks.20.hook_resid_post", layer=20, d_sae=16384)
    assert [(f.index, f.strength, f.label) for f in profile.features] == [
        (3124, 40.5, "the Golden Gate Bridge"), (77, -10.0, None)]


def test_neuronpedia_steer_preset_wrapper(service: ProfileService) -> None:
    wrapper = {
        "model": "gemma-2-2b", "defaultPrompt": "hi", "promptPresets": [{"name": "p", "prompt": "q"}],
        "featurePresets": [neuronpedia_preset("Bridge"), neuronpedia_preset("Ocean & sea")],
        "defaultSelectedFeatures": [],
    }
    result = service.import_document(wrapper)
    assert [p.name for p in result.profiles] == ["Bridge", "Ocean-sea"]


def test_neuronpedia_errors_use_source_paths(service: ProfileService) -> None:
    bad = neuronpedia_preset(steerMethod="ORTHOGONAL_DECOMP")
    bad["features"][1]["layer"] = "12-gemmascope-res-16k"
    bad["features"][0]["strength"] = "NaN"
    wrapper = {"featurePresets": [neuronpedia_preset("ok"), bad]}
    with pytest.raises(InvalidRequest) as info:
        service.import_document(json.dumps(wrapper).replace('"NaN"', "NaN"))
    assert info.value.param == "featurePresets[1].features[0].strength"
    assert "must be finite" in info.value.message
    bad["features"][0]["strength"] = 1.0
    with pytest.raises(InvalidRequest) as info:
        service.import_document(wrapper)
    assert "featurePresets[1].features[1].layer: a profile uses one SAE" in info.value.message
    assert "featurePresets[1].steerMethod: 'ORTHOGONAL_DECOMP' is not supported" in info.value.message
    assert service.list().count == 0


def test_neuronpedia_unknown_width_needs_the_resolver(service: ProfileService) -> None:
    preset = neuronpedia_preset()
    for feature in preset["features"]:
        feature.update(modelId="gpt2-small", layer="8-res-jb")
    with pytest.raises(InvalidRequest) as info:
        service.import_document(preset)
    assert info.value.param == "features[0].layer"
    profile = service.import_document(preset, d_sae_resolver=lambda m, s: 24576).profiles[0]
    assert (profile.sae.d_sae, profile.sae.hook_name) == (24576, "blocks.8.hook_resid_pre")


def goodfire_variant(**changes: Any) -> dict[str, Any]:
    return {
        "base_model": "meta-llama/Llama-3.3-70B-Instruct",
        "edits": [
            {"feature_id": "0b6e…", "feature_label": "Pirate speak", "index_in_sae": 2001, "value": 0.5},
            {"feature_id": "1c7f…", "feature_label": "Formal tone", "index_in_sae": 65535, "value": -0.3},
        ],
        "scopes": [],
        **changes,
    }


def test_goodfire_variant_mapping(service: ProfileService) -> None:
    result = service.import_document(goodfire_variant(), name="pirate", d_sae_resolver=lambda m, s: 65536)
    profile = result.profiles[0]
    assert result.source_format == "goodfire"
    assert (profile.name, profile.model, profile.mode) == ("pirate", "meta-llama/Llama-3.3-70B-Instruct", "add")
    assert (profile.sae.id, profile.sae.layer, profile.sae.d_sae) == ("Goodfire/Llama-3.3-70B-Instruct-SAE-l50", 50, 65536)
    assert [(f.index, f.strength, f.label) for f in profile.features] == [
        (2001, 0.5, "Pirate speak"), (65535, -0.3, "Formal tone")]


def test_goodfire_known_8b_sae_needs_no_resolver(service: ProfileService) -> None:
    variant = goodfire_variant(base_model="meta-llama/Llama-3.1-8B-Instruct")
    profile = service.import_document(variant).profiles[0]
    assert (profile.name, profile.sae.layer, profile.sae.d_sae) == ("goodfire-variant", 19, 65536)


def test_goodfire_errors(service: ProfileService) -> None:
    with pytest.raises(InvalidRequest) as info:
        service.import_document(goodfire_variant(scopes=[{"condition": {}, "nested_variant": {}}]), d_sae_resolver=lambda m, s: 65536)
    assert info.value.param == "scopes"
    with pytest.raises(InvalidRequest) as info:
        service.import_document(goodfire_variant())
    assert info.value.param == "base_model"
    with pytest.raises(InvalidRequest) as info:
        service.import_document(goodfire_variant(), d_sae_resolver=lambda m, s: 4096)
    assert info.value.param == "edits[1].index_in_sae" and "65535 is out of range" in info.value.message
    with pytest.raises(InvalidRequest) as info:
        service.import_document(goodfire_variant(base_model="gpt2"))
    assert info.value.param == "base_model" and "no known Goodfire SAE for 'gpt2'" in info.value.message
    bad = goodfire_variant()
    bad["edits"][1]["value"] = "strong"
    with pytest.raises(InvalidRequest) as info:
        service.import_document(bad, d_sae_resolver=lambda m, s: 65536)
    assert info.value.param == "edits[1].value"
    assert service.list().count == 0
