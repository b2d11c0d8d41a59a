"""Reading profile files: miLLM export v1, Neuronpedia presets and Goodfire variants.

`read_documents(raw)` turns bytes or parsed JSON into `ProfileDocument`s, or raises one
`InvalidRequest` that lists every bad field by its path in the *source* document
("profiles[0].features[1].strength: must be finite", "edits[2].index_in_sae: ..."), with
`param` set to the first one. Nothing here touches the database; the service decides
names and writes. The mappings are documented in docs/profile-format.md.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from millm.errors import InvalidRequest
from millm.protocol.common import SteeringMode
from millm.protocol.profiles import (
    BUNDLE_FORMAT,
    FORMAT_VERSION,
    PROFILE_FORMAT,
    GoodfireVariant,
    NeuronpediaFeaturePreset,
    ProfileCreate,
    ProfileDocument,
    SaeRef,
    SteeringFeature,
)

SourceFormat = Literal["millm.profile", "millm.profiles", "neuronpedia", "goodfire"]
# (model id, SAE id) → that SAE's d_sae, or None when unknown.
DSaeResolver = Callable[[str, str], int | None]
FieldErrors = list[tuple[str, str]]
MAX_LISTED_ERRORS = 50

# Goodfire's open SAEs (Hub repo, layer, d_sae), keyed by the variant's base_model. d_sae of the 8B SAE follows
# from its checkpoint (2.15 GB fp32 = 2 · 4096 · 65536 weights); the 70B one is left to
# the resolver.
GOODFIRE_SAES: dict[str, tuple[str, int, int | None]] = {
    "meta-llama/Meta-Llama-3.1-8B-Instruct": ("Goodfire/Llama-3.1-8B-Instruct-SAE-l19", 19, 65536),
    "meta-llama/Llama-3.1-8B-Instruct": ("Goodfire/Llama-3.1-8B-Instruct-SAE-l19", 19, 65536),
    "meta-llama/Llama-3.3-70B-Instruct": ("Goodfire/Llama-3.3-70B-Instruct-SAE-l50", 50, None),
}
NEURONPEDIA_METHODS: dict[str, SteeringMode] = {"SIMPLE_ADDITIVE": "add"}

_MESSAGES = {
    "finite_number": "must be finite",
    "extra_forbidden": "unknown field",
    "missing": "required",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "dict_type": "must be an object",
    "model_attributes_type": "must be an object",
    "string_pattern_mismatch": "must be URL-safe: letters, digits, '.', '_' or '-', at most 64 characters, "
    "starting with a letter or digit",
}


@dataclass
class ReadResult:
    source_format: SourceFormat
    documents: list[ProfileDocument] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # where each document sits in the source, e.g. "profiles[2]"


# ---------------------------------------------------------------------------------------
# Errors


def format_loc(loc: Sequence[int | str], prefix: str = "") -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def validation_errors(exc: ValidationError, prefix: str = "") -> FieldErrors:
    errors: FieldErrors = []
    for error in exc.errors():
        ctx = error.get("ctx") or {}
        kind = error["type"]
        if kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
            op = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<", "less_than_equal": "<="}[kind]
            message = f"must be {op} {next(iter(ctx.values()))}"
        else:
            message = _MESSAGES.get(kind) or error["msg"][:1].lower() + error["msg"][1:]
        errors.append((format_loc(error["loc"], prefix), message))
    return errors


def invalid(errors: FieldErrors, *, what: str = "profile") -> InvalidRequest:
    """One InvalidRequest listing every error; `param` names the first bad field."""
    assert errors
    lines = [f"{path}: {message}" if path else message for path, message in errors[:MAX_LISTED_ERRORS]]
    if len(errors) > MAX_LISTED_ERRORS:
        lines.append(f"... and {len(errors) - MAX_LISTED_ERRORS} more")
    head = f"invalid {what}: " if len(errors) == 1 else f"invalid {what} ({len(errors)} errors): "
    return InvalidRequest(head + "; ".join(lines), param=errors[0][0] or None, code="invalid_profile")


def raise_if_errors(errors: FieldErrors, *, what: str = "profile") -> None:
    if errors:
        raise invalid(errors, what=what)


def feature_errors(
    features: Sequence[SteeringFeature],
    *,
    d_sae: int,
    sae_id: str,
    path: Callable[[int, str], str],
) -> FieldErrors:
    """Indices out of range or repeated; `path(i, "index")` names the source field."""
    errors: FieldErrors = []
    seen: dict[int, int] = {}
    for i, feature in enumerate(features):
        if feature.index >= d_sae:
            errors.append((path(i, "index"), f"{feature.index} is out of range: SAE '{sae_id}' has d_sae {d_sae}"))
        if feature.index in seen:
            where = seen[feature.index]
            errors.append((path(i, "index"), f"feature {feature.index} is already listed at position {where}"))
        seen.setdefault(feature.index, i)
    return errors


def check_document(
    doc: ProfileDocument | ProfileCreate, *, prefix: str, d_sae_resolver: DSaeResolver | None, feature_path: Callable[[int, str], str]
) -> FieldErrors:
    """Semantic checks beyond the schema: d_sae against the live SAE, index range, repeats."""
    errors: FieldErrors = []
    d_sae = doc.sae.d_sae
    live = d_sae_resolver(doc.model, doc.sae.id) if d_sae_resolver is not None else None
    if live is not None and live != d_sae:
        errors.append((_join(prefix, "sae.d_sae"), f"is {d_sae}, but SAE '{doc.sae.id}' has d_sae {live}"))
        d_sae = min(d_sae, live)
    errors += feature_errors(doc.features, d_sae=d_sae, sae_id=doc.sae.id, path=feature_path)
    return errors


def _join(prefix: str, rest: str) -> str:
    return f"{prefix}.{rest}" if prefix else rest


def _feature_path(prefix: str, i: int, name: str) -> str:
    return _join(prefix, f"features[{i}].{name}")


# ---------------------------------------------------------------------------------------
# Reading


def parse_json(raw: bytes | str | dict[str, Any] | list[Any]) -> Any:
    if isinstance(raw, (dict, list)):
        return raw
    try:
        # Files are UTF-8 (a BOM is tolerated); json.loads would also guess UTF-16/32.
        return json.loads(raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"invalid JSON: not UTF-8 text ({exc.reason})", code="invalid_json") from exc
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", code="invalid_json"
        ) from exc
    except RecursionError:
        raise InvalidRequest("invalid JSON: arrays or objects are nested too deeply", code="invalid_json") from None


def read_documents(
    raw: bytes | str | dict[str, Any] | list[Any], *, d_sae_resolver: DSaeResolver | None = None
) -> ReadResult:
    """Detect the format and convert; raises InvalidRequest listing every bad field."""
    data = parse_json(raw)
    if isinstance(data, dict) and "format" in data:
        return _read_millm(data, d_sae_resolver)
    if isinstance(data, dict) and "base_model" in data and "edits" in data:
        return _read_goodfire(data, d_sae_resolver)
    if isinstance(data, dict) and "featurePresets" in data:
        return _read_neuronpedia_wrapper(data, d_sae_resolver)
    if isinstance(data, dict) and "features" in data and "name" in data:
        return _read_neuronpedia_presets([data], "", d_sae_resolver)
    if isinstance(data, list) and data and all(isinstance(item, dict) and "features" in item for item in data):
        return _read_neuronpedia_presets(data, None, d_sae_resolver)
    raise InvalidRequest(
        "unrecognized profile document: expected a miLLM export (\"format\": \"millm.profile\" or "
        "\"millm.profiles\"), a Neuronpedia feature preset or steer preset, or a Goodfire variant "
        "(\"base_model\" and \"edits\")",
        param="format",
        code="invalid_profile",
    )


def _read_millm(data: dict[str, Any], resolver: DSaeResolver | None) -> ReadResult:
    fmt, version = data.get("format"), data.get("format_version")
    if fmt not in (PROFILE_FORMAT, BUNDLE_FORMAT):
        raise_if_errors([("format", f"unknown format {fmt!r}; expected '{PROFILE_FORMAT}' or '{BUNDLE_FORMAT}'")])
    if version != FORMAT_VERSION:
        message = f"unsupported version {version!r}; this server reads version {FORMAT_VERSION}"
        raise_if_errors([("format_version", message)])
    if fmt == PROFILE_FORMAT:
        result = ReadResult("millm.profile")
        items: list[tuple[str, Any]] = [("", data)]
    else:
        unknown = sorted(set(data) - {"format", "format_version", "profiles"})
        errors: FieldErrors = [(key, "unknown field") for key in unknown]
        profiles = data.get("profiles")
        if not isinstance(profiles, list):
            errors.append(("profiles", "must be a list" if "profiles" in data else "required"))
        raise_if_errors(errors)
        result = ReadResult("millm.profiles")
        items = [(f"profiles[{i}]", item) for i, item in enumerate(profiles)]  # type: ignore[arg-type]
    errors = []
    for prefix, item in items:
        try:
            doc = ProfileDocument.model_validate(item)
        except ValidationError as exc:
            errors += validation_errors(exc, prefix)
            continue
        errors += check_document(
            doc,
            prefix=prefix,
            d_sae_resolver=resolver,
            feature_path=functools.partial(_feature_path, prefix),
        )
        result.documents.append(doc)
        result.paths.append(prefix)
    raise_if_errors(errors)
    return result


# ---------------------------------------------------------------------------------------
# Neuronpedia


def _read_neuronpedia_wrapper(data: dict[str, Any], resolver: DSaeResolver | None) -> ReadResult:
    presets = data["featurePresets"]
    if not isinstance(presets, list):
        raise_if_errors([("featurePresets", "must be a list")])
    return _read_neuronpedia_presets(presets, "featurePresets", resolver)


def _read_neuronpedia_presets(items: list[Any], container: str | None, resolver: DSaeResolver | None) -> ReadResult:
    result = ReadResult("neuronpedia")
    errors: FieldErrors = []
    for i, item in enumerate(items):
        prefix = "" if container == "" else (f"{container}[{i}]" if container else f"[{i}]")
        try:
            preset = NeuronpediaFeaturePreset.model_validate(item)
        except ValidationError as exc:
            errors += validation_errors(exc, prefix)
            continue
        doc_errors, doc = _neuronpedia_document(preset, prefix, resolver)
        errors += doc_errors
        if doc is not None:
            result.documents.append(doc)
            result.paths.append(prefix)
    raise_if_errors(errors)
    return result


def _neuronpedia_document(
    preset: NeuronpediaFeaturePreset, prefix: str, resolver: DSaeResolver | None
) -> tuple[FieldErrors, ProfileDocument | None]:
    errors: FieldErrors = []
    first = preset.features[0]
    for i, feature in enumerate(preset.features[1:], start=1):
        if (feature.model_id, feature.layer) != (first.model_id, first.layer):
            errors.append((
                _join(prefix, f"features[{i}].layer"),
                f"a profile uses one SAE: feature 0 is on {first.model_id}/{first.layer}, "
                f"this one on {feature.model_id}/{feature.layer}",
            ))
    mode = NEURONPEDIA_METHODS.get(preset.steer_method or "SIMPLE_ADDITIVE")
    if mode is None:
        errors.append((_join(prefix, "steerMethod"), f"{preset.steer_method!r} is not supported; only SIMPLE_ADDITIVE"))
    match = re.match(r"^(\d+)-(.+)$", first.layer)
    if match is None:
        message = "expected '<layer>-<SAE set>', e.g. '20-gemmascope-res-16k'"
        errors.append((_join(prefix, "features[0].layer"), message))
    if errors:
        return errors, None
    assert match is not None and mode is not None
    layer, sae_set = int(match.group(1)), match.group(2)
    d_sae = resolver(first.model_id, first.layer) if resolver is not None else None
    d_sae = d_sae or _width_from_name(sae_set)
    if d_sae is None:
        return [(
            _join(prefix, "features[0].layer"),
            f"cannot tell d_sae of SAE '{first.layer}' (no width like '16k' in its name): "
            "attach that SAE first so its size is known",
        )], None
    features = [SteeringFeature(index=f.index, strength=f.strength, label=f.explanation) for f in preset.features]
    sae = SaeRef(id=first.layer, hook_name=_hook_from_set(layer, sae_set), layer=layer, d_sae=d_sae)
    errors += feature_errors(
        features, d_sae=d_sae, sae_id=sae.id, path=lambda i, name: _join(prefix, f"features[{i}].{name}")
    )
    doc = ProfileDocument(
        name=slugify_name(preset.name), description=preset.name, model=first.model_id, sae=sae, mode=mode,
        features=features,
    )
    return errors, doc


def _width_from_name(sae_set: str) -> int | None:
    """'gemmascope-res-16k' → 16384: Neuronpedia writes powers of two as rounded k/m."""
    match = re.search(r"(?:^|[-_])(\d+)([km])(?:$|[-_])", sae_set)
    if match is None:
        return None
    approx = int(match.group(1)) * (1000 if match.group(2) == "k" else 1_000_000)
    return 1 << round(math.log2(approx))


def _hook_from_set(layer: int, sae_set: str) -> str:
    """Best-effort TransformerLens hook name from a Neuronpedia SAE set name."""
    if "att" in sae_set:
        return f"blocks.{layer}.attn.hook_z"
    if "mlp" in sae_set or "transcoder" in sae_set:
        return f"blocks.{layer}.hook_mlp_out"
    if "res-jb" in sae_set or "resid_pre" in sae_set:
        return f"blocks.{layer}.hook_resid_pre"
    return f"blocks.{layer}.hook_resid_post"


# ---------------------------------------------------------------------------------------
# Goodfire


def _read_goodfire(data: dict[str, Any], resolver: DSaeResolver | None) -> ReadResult:
    try:
        variant = GoodfireVariant.model_validate(data)
    except ValidationError as exc:
        raise invalid(validation_errors(exc)) from exc
    errors: FieldErrors = []
    if variant.scopes:
        errors.append(("scopes", "conditional (scoped) variants are not supported; remove the scopes"))
    known = GOODFIRE_SAES.get(variant.base_model)
    if known is None:
        known_models = ", ".join(GOODFIRE_SAES)
        errors.append(("base_model", f"no known Goodfire SAE for {variant.base_model!r}; known: {known_models}"))
        raise invalid(errors)
    sae_id, layer, d_sae = known
    d_sae = (resolver(variant.base_model, sae_id) if resolver is not None else None) or d_sae
    if d_sae is None:
        errors.append(("base_model", f"the size of SAE '{sae_id}' is unknown: attach it first"))
    raise_if_errors(errors)
    assert d_sae is not None
    features = [SteeringFeature(index=e.index_in_sae, strength=e.value, label=e.feature_label) for e in variant.edits]
    sae = SaeRef(id=sae_id, hook_name=f"blocks.{layer}.hook_resid_post", layer=layer, d_sae=d_sae, repo_id=sae_id)
    field_names = {"index": "index_in_sae", "strength": "value"}
    raise_if_errors(
        feature_errors(features, d_sae=d_sae, sae_id=sae_id, path=lambda i, n: f"edits[{i}].{field_names[n]}")
    )
    doc = ProfileDocument(
        name="goodfire-variant", description=f"Imported Goodfire variant for {variant.base_model}",
        model=variant.base_model, sae=sae, mode="add", features=features,
    )
    return ReadResult("goodfire", [doc], [""])


# ---------------------------------------------------------------------------------------
# Names


def slugify_name(text: str) -> str:
    """A valid profile name from free text: 'Golden Gate Bridge!' → 'Golden-Gate-Bridge'."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    slug = re.sub(r"-{2,}", "-", slug)[:64].rstrip("-._")
    return slug or "imported"


def numbered_name(name: str, n: int) -> str:
    """`name-n`, shortened so it stays within 64 characters."""
    suffix = f"-{n}"
    return name[: 64 - len(suffix)].rstrip("-._") + suffix
