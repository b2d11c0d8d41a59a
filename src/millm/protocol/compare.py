"""Wire shapes of `POST /api/compare`: one prompt under up to 8 steering variants, and its event frames.

The streamed response is server-sent events whose `data:` lines are the JSON of `CompareFrame` (a union
tagged by `type`): one `start`, then `delta`s tagged with their variant index, one `done` per variant
(sent once both it and variant 0 have finished, since it says where the two first differ), and one `end`
with the usage; or an `error` frame. The UI's frame schemas are exported from these models.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from millm.protocol.openai import AppliedSteering, ChatMessage, ErrorInfo, PromptField, SteeringIn, StopField

MAX_VARIANTS = 8


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class CompareVariantIn(_Strict):
    label: str | None = Field(None, max_length=200, description="A name to show for this variant.")
    steering: SteeringIn | None = Field(
        None, description="The variant's steering (the /v1 `steering` object). null or {\"features\": []}: "
        "unsteered (the server-wide steering does not apply to compare variants).")


class CompareRequest(_Strict):
    """Body of POST /api/compare. Give `messages` (chat template) or `prompt` (plain text or token ids)."""

    model: str | None = Field(None, description="The served model or `<model>+<profile>` (default: the loaded one).")
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    prompt: PromptField | None = Field(None, description="A single prompt: a string or a list of token ids.")
    variants: list[CompareVariantIn] = Field(
        min_length=1, description=f"1 to {MAX_VARIANTS} steering variants, run as rows of one batch with one seed; "
        "the divergence index of each is taken against variant 0.")
    max_tokens: int | None = Field(64, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Default 1; 0 is greedy.")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1,
                             description="Shared by every variant (default: one random seed, reported back).")
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stop: StopField = None
    ignore_eos: bool = False
    stream: bool = Field(True, description="Server-sent events (default); false: one JSON CompareResult.")

    @model_validator(mode="after")
    def _one_prompt(self) -> CompareRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give either 'messages' or 'prompt'")
        return self


class CompareVariantStart(BaseModel):
    index: int
    label: str | None = None
    steering: AppliedSteering


class CompareStart(BaseModel):
    type: Literal["start"] = "start"
    id: str
    model: str
    seed: int
    prompt_tokens: int
    variants: list[CompareVariantStart]


class CompareDelta(BaseModel):
    type: Literal["delta"] = "delta"
    variant: int
    text: str
    token_ids: list[int]


class CompareVariantResult(BaseModel):
    index: int
    label: str | None = None
    text: str
    tokens: int = Field(description="Generated tokens.")
    token_ids: list[int]
    finish_reason: str | None
    steering: AppliedSteering = Field(description="The variant's full steering receipt.")
    diverges_at: int | None = Field(
        description="Index of the first generated token that differs from variant 0's (its length when one "
        "is a prefix of the other); null for variant 0 and for identical outputs.")


class CompareDone(CompareVariantResult):
    type: Literal["done"] = "done"


class CompareUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompareEnd(BaseModel):
    type: Literal["end"] = "end"
    id: str
    usage: CompareUsage


class CompareError(BaseModel):
    type: Literal["error"] = "error"
    error: ErrorInfo


CompareFrame = Annotated[Union[CompareStart, CompareDelta, CompareDone, CompareEnd, CompareError],
                         Field(discriminator="type")]


class CompareResult(BaseModel):
    """The non-streamed response (`stream: false`)."""

    id: str
    object: Literal["millm.compare"] = "millm.compare"
    model: str
    seed: int
    prompt_tokens: int
    variants: list[CompareVariantResult]
    usage: CompareUsage


def diverges_at(base: list[int], other: list[int]) -> int | None:
    """The first index where two token sequences differ (the shorter length if one is a prefix of the other);
    None when they are equal."""
    for i, (a, b) in enumerate(zip(base, other, strict=False)):
        if a != b:
            return i
    return None if len(base) == len(other) else min(len(base), len(other))
