"""The miLLM MCP server: tools an agent uses to inspect, steer and query the loaded model.

`build_server(backend)` returns an `MCPServer` (the official `mcp` SDK) whose tools call a
`Backend` (see backend.py): the running server's services when mounted at `/mcp`, its REST API
from `millm mcp`. Every tool returns structured content (its output schema is the pydantic model
it returns) plus the same JSON as text; API errors come back as tool errors (`isError`) with the
API's message and the offending parameter, e.g. "feature index 9999 is out of range ... (param:
features[0].index)".

Length (over 400 lines): one short declaration per MCP tool, kept in one file so the tool list an agent
sees reads in one place.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from millm import __version__
from millm.mcp_server.backend import Backend, BackendError
from millm.protocol.admin import MemoryOut, SteeringStateOut
from millm.protocol.common import SteeringMode
from millm.protocol.monitor import FeatureStats, FeatureValue, MonitorConfigOut
from millm.protocol.openai import AppliedSteering, SteeringFeatureIn, Usage

INSTRUCTIONS = """\
miLLM serves a language model with a Sparse Autoencoder (SAE) attached to one layer. Each SAE
feature has an index and a label (what it detects, e.g. "ALL CAPS (yelling)"); adding a feature's
decoder direction with a strength steers what the model writes.

A typical session: get_status (model, SAE, current steering) -> search_features("caps") to find a
feature -> compare_steering(prompt, features=[{index, strength}]) to see its effect on one prompt
without changing anything for other users -> set_steering or activate_profile to steer every
request server-wide (clear_steering undoes it). generate runs one chat turn, steered per request,
unsteered, or with the server-wide steering. set_monitoring(enabled=true) records which features
fire; get_activations then shows them per token for recent requests.
Strengths: add mode adds strength x the decoder row (tens are strong for the demo model); clamp
mode sets the feature's activation to the strength."""

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
RUN = ToolAnnotations(read_only_hint=True, open_world_hint=False)  # generation changes no server state


# ---------------------------------------------------------------------------- outputs


class ModelSummary(BaseModel):
    id: str = Field(description="The model id to use in OpenAI requests.")
    parameters: int
    num_layers: int
    context_length: int
    device: str
    dtype: str


class SaeSummary(BaseModel):
    id: str
    layer: int | None
    hook_name: str
    d_sae: int = Field(description="Number of features (valid indices are 0 .. d_sae-1).")
    labelled_features: int


class StatusOut(BaseModel):
    status: Literal["ok", "loading", "no_model"]
    version: str
    model: ModelSummary | None
    sae: SaeSummary | None
    steering: SteeringStateOut = Field(description="The server-wide steering every request gets by default.")
    queue_depth: int
    active_sequences: int
    memory: MemoryOut


class FeatureOut(BaseModel):
    index: int
    label: str
    score: float | None = Field(None, description="How well the label explains the feature, when known.")


class FeaturePage(BaseModel):
    total: int = Field(description="Labelled features in all (list) or matches (search).")
    offset: int
    features: list[FeatureOut]
    query: str | None = None


class ProfileOut(BaseModel):
    name: str
    description: str
    mode: SteeringMode
    features: list[SteeringFeatureIn]
    active: bool = Field(description="Whether this profile is the server-wide steering now.")
    usable: bool = Field(description="Whether it fits the loaded model and attached SAE.")
    model_id: str | None = Field(None, description="The '<model>+<profile>' id that applies it per request.")


class ProfilesOut(BaseModel):
    profiles: list[ProfileOut]


class GenerationOut(BaseModel):
    text: str
    finish_reason: str | None
    request_id: str = Field(description="The completion id; get_activations(request_id=...) shows its features.")
    steering: AppliedSteering = Field(description="The steering the server applied to this request.")
    usage: Usage


class VariantOut(BaseModel):
    label: str
    text: str
    tokens: int = Field(description="Generated tokens.")
    finish_reason: str | None
    steering: AppliedSteering = Field(description="The steering the server applied to this variant.")
    diverges_at: int | None = Field(description="First generated token that differs from the unsteered text (null "
                                                "for the unsteered variant and for identical texts).")


class ComparisonOut(BaseModel):
    seed: int = Field(description="The sampling seed every variant shared.")
    variants: list[VariantOut] = Field(description="The unsteered variant first, then the steered one(s).")


class TokenOut(BaseModel):
    position: int
    token: str
    phase: str
    features: list[FeatureValue]


class RequestActivationsOut(BaseModel):
    request_id: str
    tokens: int = Field(description="Tokens recorded for the request (prompt and generated).")
    top_features: list[FeatureStats] = Field(description="The request's strongest features, by peak activation.")
    token_activations: list[TokenOut]
    truncated: bool = Field(description="Whether token_activations was cut at max_tokens.")


class ActivationsOut(BaseModel):
    monitoring: MonitorConfigOut
    requests: list[RequestActivationsOut]
    note: str | None = None


# ---------------------------------------------------------------------------- helpers

FeatureList = Annotated[list[SteeringFeatureIn], Field(
    description="Features and strengths, e.g. [{\"index\": 16, \"strength\": 8}].")]
Mode = Annotated[SteeringMode, Field(description="add: add strength x decoder row; clamp: set activation.")]
Scale = Annotated[float, Field(ge=0.0, allow_inf_nan=False, description=(
    "Intensity dial: multiplies every strength (1: as given; 0: off; at most the server's MILLM_STEERING_MAX_SCALE, "
    "default 10, or the profile's range)."))]


async def _call(coro: Any) -> Any:
    try:
        return await coro
    except BackendError as exc:
        raise ToolError(str(exc)) from exc


def _status(raw: dict[str, Any]) -> StatusOut:
    m, s = raw.get("model"), raw.get("sae")
    return StatusOut(
        status=raw["status"], version=raw["version"],
        model=ModelSummary(**{k: m[k] for k in ModelSummary.model_fields}) if m else None,
        sae=SaeSummary(**{k: s[k] for k in SaeSummary.model_fields}) if s else None,
        steering=SteeringStateOut.model_validate(raw["steering"]), queue_depth=raw["queue_depth"],
        active_sequences=raw["active_sequences"], memory=MemoryOut.model_validate(raw["memory"]),
    )


def search_labels(labels: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
    """Labels matching every word of `query` (case-insensitive; a number also matches that index),
    best first: a whole-label match, then whole-word matches, then higher label scores."""
    words = [w for w in re.findall(r"\w+", query.lower())]
    if not words:
        return []
    scored = []
    for item in labels:
        text = item["label"].lower()
        tokens = set(re.findall(r"\w+", text))
        if not all(w in text or w == str(item["index"]) for w in words):
            continue
        rank = (text.strip() == query.strip().lower(), sum(w in tokens for w in words), item.get("score") or 0.0)
        scored.append((rank, item))
    scored.sort(key=lambda pair: pair[0], reverse=True)
    return [item for _, item in scored]


def _generation(raw: dict[str, Any]) -> GenerationOut:
    choice = raw["choices"][0]
    return GenerationOut(text=choice["message"].get("content") or "", finish_reason=choice.get("finish_reason"),
                         request_id=raw["id"], steering=AppliedSteering.model_validate(raw["millm"]["steering"]),
                         usage=Usage.model_validate(raw["usage"]))


# ---------------------------------------------------------------------------- the server


def build_server(backend: Backend) -> MCPServer:
    server: MCPServer = MCPServer("millm", title="miLLM", version=__version__,
                                  instructions=INSTRUCTIONS)

    async def model_id() -> str:
        raw = await _call(backend.status())
        if not raw.get("model"):
            raise ToolError("no model is loaded (status: %s); load one with POST /api/models/load" % raw["status"])
        return str(raw["model"]["id"])

    async def chat(prompt: str, system: str | None, steering: dict[str, Any] | None, max_tokens: int,
                   temperature: float, seed: int | None, model: str) -> GenerationOut:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens,
                                "temperature": temperature}
        if seed is not None:
            body["seed"] = seed
        if steering is not None:
            body["steering"] = steering
        return _generation(await _call(backend.chat(body)))

    def request_steering(features: list[SteeringFeatureIn] | None, profile: str | None, mode: str | None,
                         scale: float | None) -> dict[str, Any] | None:
        """The /v1 `steering` object; None (the server-wide steering) when nothing is given. A scale alone
        scales the server-wide steering."""
        if features is not None and profile is not None:
            raise ToolError("give either features or profile, not both")
        out: dict[str, Any] = {}
        if profile is not None:
            out["profile"] = profile
        elif features is not None:
            out["features"] = [f.model_dump() for f in features]
        elif mode is not None:
            raise ToolError("mode applies to features; give features too")
        if mode is not None:
            out["mode"] = mode
        if scale is not None:
            out["scale"] = scale
        return out or None

    @server.tool(annotations=READ)
    async def get_status() -> StatusOut:
        """The loaded model, the attached SAE (layer, number of features), the server-wide steering and the
        request queue."""
        return _status(await _call(backend.status()))

    @server.tool(annotations=READ)
    async def list_features(offset: Annotated[int, Field(ge=0)] = 0,
                            limit: Annotated[int, Field(ge=1, le=500)] = 50) -> FeaturePage:
        """Labelled features of the attached SAE, by index (a page: offset and limit)."""
        data = (await _call(backend.labels()))["data"]
        page = [FeatureOut.model_validate(x) for x in data[offset:offset + limit]]
        return FeaturePage(total=len(data), offset=offset, features=page)

    @server.tool(annotations=READ)
    async def search_features(query: Annotated[str, Field(min_length=1, description="Words to find in labels.")],
                              limit: Annotated[int, Field(ge=1, le=200)] = 20) -> FeaturePage:
        """Find SAE features whose label contains every word of the query (e.g. "caps", "ocean", "topic food"),
        best matches first."""
        hits = search_labels((await _call(backend.labels()))["data"], query)
        return FeaturePage(total=len(hits), offset=0, features=[FeatureOut.model_validate(x) for x in hits[:limit]],
                           query=query)

    @server.tool(annotations=READ)
    async def list_profiles() -> ProfilesOut:
        """Saved steering profiles (named sets of features and strengths), which one is active, and which fit the
        loaded model and SAE."""
        profiles, models = await asyncio.gather(_call(backend.profiles()), _call(backend.models()))
        virtual = {m["profile"]: m["id"] for m in models["data"] if m.get("profile")}
        return ProfilesOut(profiles=[
            ProfileOut(name=p["name"], description=p.get("description") or "", mode=p["mode"],
                       features=[SteeringFeatureIn(index=f["index"], strength=f["strength"]) for f in p["features"]],
                       active=p["active"], usable=p["name"] in virtual, model_id=virtual.get(p["name"]))
            for p in profiles["data"]])

    @server.tool(annotations=WRITE)
    async def activate_profile(name: str) -> SteeringStateOut:
        """Make a saved profile the server-wide steering (every request without its own steering gets it).
        Returns the steering now in force."""
        await _call(backend.activate_profile(name))
        return SteeringStateOut.model_validate(await _call(backend.steering()))

    @server.tool(annotations=WRITE)
    async def deactivate_profile() -> SteeringStateOut:
        """Stop steering with the active profile (clears the server-wide steering)."""
        await _call(backend.deactivate_profile())
        return SteeringStateOut.model_validate(await _call(backend.steering()))

    @server.tool(annotations=WRITE)
    async def set_steering(features: FeatureList, mode: Mode = "add", scale: Scale = 1.0) -> SteeringStateOut:
        """Set the server-wide steering: these features at these strengths, for every request that does not
        bring its own. Replaces the previous steering (and any active profile)."""
        body = {"features": [f.model_dump() for f in features], "mode": mode, "scale": scale}
        return SteeringStateOut.model_validate(await _call(backend.set_steering(body)))

    @server.tool(annotations=WRITE)
    async def clear_steering() -> SteeringStateOut:
        """Remove the server-wide steering (and the active profile): requests are unsteered again."""
        return SteeringStateOut.model_validate(await _call(backend.clear_steering()))

    @server.tool(annotations=RUN)
    async def generate(
        prompt: Annotated[str, Field(description="The user message.")],
        features: FeatureList | None = None,
        profile: Annotated[str | None, Field(description="A saved profile to steer this request with.")] = None,
        mode: Mode | None = None,
        scale: Scale | None = None,
        unsteered: Annotated[bool, Field(description="No steering at all, not even the server-wide one.")] = False,
        system: Annotated[str | None, Field(description="An optional system message.")] = None,
        max_tokens: Annotated[int, Field(ge=1, le=4096)] = 100,
        temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0,
        seed: int | None = None,
    ) -> GenerationOut:
        """One chat turn. Steering: `features` or `profile` steer this request only; `unsteered=true` turns all
        steering off; with neither, the server-wide steering applies (`scale` alone scales it). The result says
        which steering was used."""
        steering = request_steering(features, profile, mode, scale)
        if unsteered:
            if steering is not None:
                raise ToolError("unsteered=true cannot be combined with features, profile, mode or scale")
            steering = {"features": []}
        return await chat(prompt, system, steering, max_tokens, temperature, seed, await model_id())

    @server.tool(annotations=RUN)
    async def compare_steering(
        prompt: Annotated[str, Field(description="The user message.")],
        features: FeatureList | None = None,
        profile: Annotated[str | None, Field(description="A saved profile to compare against no steering.")] = None,
        mode: Mode | None = None,
        scales: Annotated[list[Annotated[float, Field(ge=0.0, allow_inf_nan=False)]] | None, Field(
            min_length=1, max_length=7, description="Intensities to try, one steered variant each (e.g. [0.5, 1, 2]); "
            "default: one variant at the steering's own scale.")] = None,
        system: Annotated[str | None, Field(description="An optional system message.")] = None,
        max_tokens: Annotated[int, Field(ge=1, le=4096)] = 100,
        temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0,
        seed: int | None = None,
    ) -> ComparisonOut:
        """The same prompt unsteered and steered, side by side: rows of one batch with one seed (POST /api/compare).
        Steering: `features`, a `profile`, or (neither) the current server-wide steering; `scales` adds one variant
        per intensity. Each steered variant says where its text first departs from the unsteered one. Changes
        nothing on the server."""
        steering = request_steering(features, profile, mode, None)
        if steering is None:
            state = await _call(backend.steering())
            if not state["features"]:
                raise ToolError("nothing to compare: give features or a profile (no server-wide steering is set)")
            steering = {"features": [{"index": f["index"], "strength": f["strength"]} for f in state["features"]],
                        "mode": state["mode"], "normalize": state["normalize"],
                        "steer_special_tokens": state["steer_special_tokens"], "scale": state.get("scale", 1.0)}
        steered = ([{"label": "steered", "steering": steering}] if scales is None else
                   [{"label": f"scale {x:g}", "steering": {**steering, "scale": x}} for x in scales])
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        body: dict[str, Any] = {"model": await model_id(), "messages": messages, "max_tokens": max_tokens,
                                "temperature": temperature,
                                "variants": [{"label": "unsteered", "steering": {"features": []}}, *steered]}
        if seed is not None:
            body["seed"] = seed
        raw = await _call(backend.compare(body))
        return ComparisonOut(seed=raw["seed"], variants=[VariantOut(
            label=v["label"], text=v["text"], tokens=v["tokens"], finish_reason=v["finish_reason"],
            steering=AppliedSteering.model_validate(v["steering"]), diverges_at=v["diverges_at"])
            for v in raw["variants"]])

    @server.tool(annotations=WRITE)
    async def set_monitoring(
        enabled: bool = True,
        top_k: Annotated[int | None, Field(ge=1, le=256, description="Features recorded per token.")] = None,
        features: Annotated[list[int] | None, Field(
            description="Record only these feature indices ([] = the top_k strongest per token).")] = None,
    ) -> MonitorConfigOut:
        """Turn activation monitoring on or off (it records which SAE features fire at each token of every
        request, for get_activations and the live monitor)."""
        body: dict[str, Any] = {"enabled": enabled}
        if top_k is not None:
            body["top_k"] = top_k
        if features is not None:
            body["features"] = features
        return MonitorConfigOut.model_validate(await _call(backend.monitor_config(body)))

    @server.tool(annotations=READ)
    async def get_activations(
        request_id: Annotated[str | None, Field(description="A request id from generate; default: the latest.")] = None,
        last: Annotated[int, Field(ge=1, le=20, description="How many recent requests (without request_id).")] = 1,
        top: Annotated[int, Field(ge=1, le=64, description="Features shown per token.")] = 5,
        phase: Literal["all", "prompt", "generated"] = "generated",
        max_tokens: Annotated[int, Field(ge=1, le=2048, description="Tokens shown per request.")] = 64,
    ) -> ActivationsOut:
        """Which SAE features fired, token by token, in recent requests (monitoring must be on: set_monitoring).
        Values are rounded to two decimals; top_features summarises each request."""
        config = MonitorConfigOut.model_validate(await _call(backend.monitor_config(None)))
        history = (await _call(backend.monitor_history(request_id)))["data"]
        chosen = history if request_id else history[-last:][::-1]
        out = []
        for h in chosen:
            frames = [f for f in h["frames"] if phase == "all" or f["phase"] == phase]
            tokens = [TokenOut(position=f["position"], token=f["token"], phase=f["phase"], features=[
                FeatureValue(index=a["index"], value=round(a["value"], 2), label=a.get("label"))
                for a in sorted(f["activations"], key=lambda a: -a["value"])[:top]]) for f in frames[:max_tokens]]
            stats = [FeatureStats(**{**s, "min": round(s["min"], 2), "max": round(s["max"], 2),
                                     "mean": round(s["mean"], 2)}) for s in h["stats"][:top]]
            out.append(RequestActivationsOut(request_id=h["request_id"], tokens=h["tokens"], top_features=stats,
                                             token_activations=tokens, truncated=len(frames) > max_tokens))
        note = None
        if not config.enabled:
            note = "monitoring is off: call set_monitoring(enabled=true), then generate, to record activations"
        elif config.paused:
            note = "monitoring is paused: nothing new is recorded until it is resumed"
        elif not out:
            note = "no request has been recorded since monitoring was turned on"
        return ActivationsOut(monitoring=config, requests=out, note=note)

    return server
