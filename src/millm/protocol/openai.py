"""Wire shapes of the OpenAI-compatible API (/v1/*) and the error envelope.

Requests accept unknown top-level fields (clients add many) and log them at debug level;
the `steering` extension object is strict, so a typo inside it is a 400, not a silent no-op.

Length (over 400 lines): one pydantic model per OpenAI wire object, kept together as OpenAI's own
reference keeps them.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from millm.protocol.common import SteeringMode
from millm.protocol.hub import MemoryEstimateOut

log = logging.getLogger(__name__)


class OpenAIBase(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    @model_validator(mode="after")
    def _log_extra(self) -> OpenAIBase:
        if self.model_extra:
            log.debug("ignoring unknown fields in %s: %s", type(self).__name__, sorted(self.model_extra))
        return self


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


# ---------------------------------------------------------------------------- errors


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    memory_estimate: MemoryEstimateOut | None = Field(
        None, exclude_if=lambda v: v is None,
        description="Only with code insufficient_memory: the estimate (weights, KV cache, SAE, overhead) that did "
                    "not fit in the free memory it was compared with.")


class ErrorResponse(BaseModel):
    error: ErrorInfo


# ---------------------------------------------------------------------------- steering extension


class SteeringFeatureIn(Strict):
    index: int = Field(ge=0, description="SAE feature index (0 <= index < d_sae).")
    strength: float = Field(description="Strength: added multiple of W_dec[index] (add) or the clamped value (clamp).")

    @field_validator("strength")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("strength must be a finite number")
        return v


class SteeringIn(Strict):
    """Per-request steering, sent as a top-level `steering` object (SDKs: extra_body)."""

    profile: str | None = Field(None, description="Name of a saved profile to apply.")
    features: list[SteeringFeatureIn] | None = Field(None, description="Features and strengths; [] disables steering.")
    mode: SteeringMode | None = Field(
        None, description="add (default): h += strength x decoder row; clamp: pin the feature's activation.")
    normalize: bool | None = Field(None, description="Use unit-norm decoder rows for add (as Neuronpedia).")
    steer_special_tokens: bool | None = Field(None, description="Also steer BOS and other special-token positions.")
    scale: float | None = Field(
        None, ge=0.0, allow_inf_nan=False,
        description="Intensity dial: multiplies every strength of the selected steering (request, profile or "
        "server-wide), 0 to the server's maximum (MILLM_STEERING_MAX_SCALE) or the profile's range; 0 turns it off. "
        "Default: the profile's own default scale, else 1.")
    evidence: bool | None = Field(
        None, description="Report each steered feature's activation before and after the intervention in the "
        "receipt (`millm.steering.evidence`).")

    @model_validator(mode="after")
    def _one_source(self) -> SteeringIn:
        if self.profile is not None and self.features is not None:
            raise ValueError("give either 'profile' or 'features', not both")
        return self


class AppliedFeature(BaseModel):
    index: int
    strength: float = Field(description="The strength applied: raw_strength x scale.")
    raw_strength: float | None = Field(None, description="The strength before the scale (given when scale is not 1).")
    label: str | None = Field(None, description="The feature's label, when the attached SAE has one.")


class ActivationSummary(BaseModel):
    mean: float
    max: float


class SkippedPosition(BaseModel):
    position: int
    token: str
    reason: Literal["special_token"] = Field("special_token", description="special_token: steer_special_tokens is false.")


class FeatureEvidence(BaseModel):
    """What the steering did to one feature of one choice, measured at the hook."""

    index: int
    positions_steered: int = Field(description="Positions (prompt and fed-back generated tokens) the steering touched.")
    positions_skipped: int = Field(description="Positions left alone (see `skipped` for which and why).")
    tokens: int = Field(description="Generated tokens the before/after statistics cover.")
    before: ActivationSummary | None = Field(None, description="Activation at the hook before the intervention.")
    after: ActivationSummary | None = Field(None, description="Activation at the hook after the intervention.")


class ChoiceEvidence(BaseModel):
    choice: int
    features: list[FeatureEvidence]
    skipped: list[SkippedPosition] = Field(default_factory=list, description="The first 64 skipped positions.")


class AppliedSteering(BaseModel):
    """What steering was applied to a request, echoed in every response (`millm.steering`)."""

    source: Literal["request", "profile", "model", "server", "none"]
    profile: str | None = None
    mode: SteeringMode | None = None
    sae: str | None = None
    hook_name: str | None = None
    features: list[AppliedFeature] = Field(default_factory=list)
    layer: int | None = None
    d_sae: int | None = None
    normalize: bool | None = None
    steer_special_tokens: bool | None = None
    scale: float | None = Field(None, description="The intensity dial that multiplied every raw strength.")
    hash: str | None = Field(None, description="SHA-256 of the canonical form of the applied steering (docs/api.md); "
                             "null when nothing was applied.")
    server_steering_changed: bool | None = Field(
        None, description="In the final receipt: whether the server-wide steering changed while this request ran "
        "(the request keeps the steering it started with).")
    evidence: list[ChoiceEvidence] | None = Field(
        None, description="Per choice and steered feature: positions steered and skipped, and the activation at the "
        "hook before and after the intervention over the generated tokens (the positions that produced them).")
    evidence_value: str | None = Field(
        None, description="Which activation the evidence reports (for a TopK SAE, the value after top-k selection).")


MAX_ACTIVATION_FEATURES = 64
MAX_ACTIVATION_VALUES = 200_000  # per response: positions x features x choices


class ActivationsIn(Strict):
    """The request's own SAE activations, returned in `millm.activations` (sent as a top-level `activations` object,
    SDKs: extra_body). Give `features` or `top_k`."""

    features: list[int] | None = Field(None, min_length=1, max_length=MAX_ACTIVATION_FEATURES,
                                       description="Feature indices to report at every position (distinct, < d_sae).")
    top_k: int | None = Field(None, ge=1, le=MAX_ACTIVATION_FEATURES,
                              description="Report the k most active features at every position instead.")
    positions: Literal["prompt", "completion", "all", "last"] = Field(
        "completion", description="prompt: the prompt tokens (a leading BOS left out, as the monitor does); "
        "completion: the generated tokens fed back through the model (all but the last); all: both; last: the last "
        "position the model read.")
    read: Literal["before", "after"] = Field(
        "after", description="Read the hook's activations before or after this request's steering.")

    @model_validator(mode="after")
    def _one_kind(self) -> ActivationsIn:
        if (self.features is None) == (self.top_k is None):
            raise ValueError("give either 'features' or 'top_k'")
        if self.features is not None and len(set(self.features)) != len(self.features):
            raise ValueError("each feature index may appear once")
        return self


class FeatureActivationOut(BaseModel):
    index: int
    value: float
    label: str | None = None


class TokenActivationsOut(BaseModel):
    """Activations at one token: the same fields and values as a /ws/monitor frame."""

    position: int
    token_id: int
    token: str
    phase: Literal["prompt", "generated"]
    activations: list[FeatureActivationOut]


class ChoiceActivations(BaseModel):
    choice: int
    read: Literal["before", "after"]
    tokens: list[TokenActivationsOut]


class MillmInfo(BaseModel):
    steering: AppliedSteering
    activations: list[ChoiceActivations] | None = Field(
        None, exclude_if=lambda v: v is None,
        description="With a request's `activations` object: its SAE activations per choice, token by token.")


# ---------------------------------------------------------------------------- sampling fields shared

StopField = str | list[str] | None


class SamplingFields(OpenAIBase):
    model: str
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1, description="Extension: keep the k most likely tokens (-1 or 0: off).")
    n: int = Field(1, ge=1, le=128)
    stop: StopField = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1, description="A 64-bit signed integer.")
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ignore_eos: bool = False
    steering: SteeringIn | None = None
    activations: ActivationsIn | None = None
    allowed_token_ids: list[int] | None = Field(
        None, min_length=1, description="Extension (as vLLM): sample only among these token ids; with logprobs, "
                                        "their probabilities renormalised over the set (a classifier's scores).")

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: StopField) -> StopField:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for k, b in (v or {}).items():
            if not k.lstrip("-").isdigit():
                raise ValueError(f"logit_bias keys must be token ids, got {k!r}")
            if not -100.0 <= b <= 100.0:
                raise ValueError(f"logit_bias values must be in [-100, 100], got {b}")
        return v

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class StreamOptions(OpenAIBase):
    include_usage: bool = False


# ---------------------------------------------------------------------------- chat


class ContentPart(OpenAIBase):
    type: str
    text: str | None = None


class ToolCallFunction(BaseModel):
    name: str
    arguments: str = Field(description="The call's arguments as a JSON object text.")


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(OpenAIBase):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, description="An assistant turn's tool calls, sent back.")
    tool_call_id: str | None = Field(None, description="On a tool message: the call it answers.")


class FunctionDef(OpenAIBase):
    name: str = Field(pattern=r"^[a-zA-Z0-9_.\-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(OpenAIBase):
    type: Literal["function"]
    function: FunctionDef


class JsonSchemaFormat(OpenAIBase):
    name: str = Field(max_length=64, description="A name for the schema (as OpenAI: a-z, A-Z, 0-9, _ and -).")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="The JSON schema the output follows.")
    strict: bool | None = Field(None, description="Accepted; the output always follows the schema here.")


class ResponseFormat(OpenAIBase):
    """Structured outputs, enforced by constrained decoding: `json_object` (any JSON object) or `json_schema`."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object")
        return self


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0, description="0 only with prompt_logprobs: score, generate nothing.")
    max_completion_tokens: int | None = Field(None, ge=0)
    prompt_logprobs: int | None = Field(
        None, ge=0, le=20, description="Extension: the logprob of every rendered prompt token (and this many "
                                       "alternatives), in `prompt_logprobs`; with max_tokens 0 the request only scores.")
    add_generation_prompt: bool = Field(True, description="Extension: end the rendering with the assistant turn's "
                                                          "opening (as transformers' apply_chat_template).")
    continue_final_message: bool = Field(False, description="Extension: render the last (assistant) message open, "
                                                            "so its text is scored or continued, not closed.")
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[ToolDef] | None = None
    tool_choice: str | dict[str, Any] | None = Field(
        None, description="'none', 'auto' (the default with tools), 'required' or {'type': 'function', "
                          "'function': {'name': ...}}; required and named calls are enforced by a grammar.")
    parallel_tool_calls: bool = True

    @model_validator(mode="after")
    def _top_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs: true")
        return self

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, v: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if v is None or v in ("auto", "none", "required"):
            return v
        fn = v.get("function") if isinstance(v, dict) else None
        if not (isinstance(v, dict) and v.get("type") == "function" and isinstance(fn, dict)
                and isinstance(fn.get("name"), str)):
            raise ValueError("tool_choice must be 'none', 'auto', 'required' or "
                             "{'type': 'function', 'function': {'name': ...}}")
        return v

    @property
    def named_tool(self) -> str | None:
        return self.tool_choice["function"]["name"] if isinstance(self.tool_choice, dict) else None


class ChatLogprobTop(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatLogprobContent(ChatLogprobTop):
    top_logprobs: list[ChatLogprobTop]


class ChatLogprobs(BaseModel):
    content: list[ChatLogprobContent] | None
    refusal: None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    tool_calls: list[ToolCall] | None = Field(None, exclude_if=lambda v: v is None)


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: ChatLogprobs | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None
    millm: MillmInfo | None = None
    prompt_logprobs: list[ChatLogprobContent | None] | None = Field(
        None, exclude_if=lambda v: v is None,
        description="With prompt_logprobs: one entry per prompt token (null for the first).")


def _absent_when_none(value: object) -> bool:
    return value is None


class ChatDelta(BaseModel):
    # Only the first delta of a choice carries the role; later ones leave the key out.
    role: Literal["assistant"] | None = Field(None, exclude_if=_absent_when_none)
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = Field(None, exclude_if=_absent_when_none)


class ToolCallFunctionDelta(BaseModel):
    name: str | None = Field(None, exclude_if=_absent_when_none)
    arguments: str = ""


class ToolCallDelta(BaseModel):
    """A streamed tool call: the first delta of a call has id, type and name; later ones append arguments."""

    index: int
    id: str | None = Field(None, exclude_if=_absent_when_none)
    type: Literal["function"] | None = Field(None, exclude_if=_absent_when_none)
    function: ToolCallFunctionDelta


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    millm: MillmInfo | None = Field(None, exclude_if=_absent_when_none)


# ---------------------------------------------------------------------------- completions

PromptField = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(SamplingFields):
    prompt: PromptField
    max_tokens: int | None = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=20)
    response_format: ResponseFormat | None = Field(None, description="Extension: structured outputs, as on chat.")


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    millm: MillmInfo | None = None


# ---------------------------------------------------------------------------- embeddings


class EmbeddingRequest(OpenAIBase):
    model: str
    input: PromptField
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None
    steering: SteeringIn | None = None
    pooling: Literal["mean", "last", "cls"] = Field(
        "mean", description="Extension: how token states become one vector: their mean, the last token's (what a "
                            "causal LM has read the whole input at), or the first token's (cls; BOS where the "
                            "tokenizer adds one).")
    normalize: bool = Field(True, description="Extension: L2-normalise each vector (false: the raw pooled state).")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
    millm: MillmInfo | None = None


# ---------------------------------------------------------------------------- models


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "millm"
    root: str | None = Field(None, description="The underlying model of a profile's virtual model id.")
    profile: str | None = Field(None, description="The profile a virtual model id applies.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


SamplingFields.model_rebuild()
ChatCompletionRequest.model_rebuild()
ChatDelta.model_rebuild()
CompletionRequest.model_rebuild()

