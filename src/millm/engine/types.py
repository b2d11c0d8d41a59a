"""Plain data passed between the services layer and the generation worker.

Frozen dataclasses only; no torch tensors cross this boundary (steering is compiled and batch plans are built
inside the worker). Embedding vectors come back as numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from millm.errors import MillmError

if TYPE_CHECKING:
    from millm.engine.grammar import Constraint

_new = object.__new__

FinishReason = Literal["stop", "length", "cancelled", "error"]
GREEDY_BELOW = 1e-5  # temperature

# The steering modes (protocol.common.SteeringMode is the same on the wire: the layers import neither way).
SteeringMode = Literal["add", "clamp"]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    # None: no logprobs; k >= 0: the chosen token's logprob plus the k most likely alternatives.
    logprobs: int | None = None
    # Constrained decoding (structured outputs, enforced tool calls): each row follows this grammar.
    constraint: Constraint | None = None
    # When not empty: only these token ids can be drawn (and logprobs are over them).
    allowed_token_ids: tuple[int, ...] = ()

    @property
    def greedy(self) -> bool:
        # As vLLM: a temperature under 1e-5 is greedy (dividing float32 logits by it would overflow).
        return self.temperature < GREEDY_BELOW or self.top_k == 1


@dataclass(frozen=True)
class FeatureStrength:
    index: int
    strength: float


@dataclass(frozen=True)
class SteeringSpec:
    """What to do to the residual stream at the SAE's hook point for one request.

    mode "add": h += sum(strength * W_dec[index]) (unit-norm rows when `normalize`).
    mode "clamp": features are set to `strength` with the reconstruction error kept.
    """

    features: tuple[FeatureStrength, ...]
    mode: SteeringMode = "add"
    normalize: bool = False
    steer_special_tokens: bool = True
    evidence: bool = False  # measure the steered features before and after the intervention

    @property
    def empty(self) -> bool:
        return not self.features


@dataclass(frozen=True)
class ActivationRead:
    """A request's own activations: the selected `features` (or the `top_k` features) per token at `positions`,
    read `before` or `after` the steering, from the same capture the monitor uses."""

    features: tuple[int, ...] | None = None
    top_k: int = 0
    positions: Literal["prompt", "completion", "all", "last"] = "completion"
    point: Literal["before", "after"] = "after"


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt_ids: tuple[int, ...]
    params: SamplingParams
    n: int = 1
    steering: SteeringSpec | None = None
    # When set, the worker also returns logprobs of the prompt tokens (completions echo + logprobs).
    prompt_logprobs: bool = False
    model: str | None = None
    activations: ActivationRead | None = None
    # With prompt_logprobs: how many alternatives per prompt token (default: params.logprobs).
    prompt_top_logprobs: int | None = None
    # Background work (batch lines): waits behind every live request in the queue.
    background: bool = False


@dataclass(frozen=True)
class EmbeddingRequest:
    """Embed each input (token ids): the last hidden state pooled over its tokens, L2-normalised when `normalize`.
    With several inputs, input i's monitor records carry the request id `<request_id>-<i>`."""

    request_id: str
    inputs: tuple[tuple[int, ...], ...]
    steering: SteeringSpec | None = None
    pooling: Literal["mean", "last", "cls"] = "mean"
    normalize: bool = True


@dataclass(frozen=True)
class TopLogprob:
    token_id: int
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class FeatureEvidenceStats:
    """One steered feature's activation at the hook before and after the intervention, over the positions that
    produced generated tokens (None when not measured or no token was generated)."""

    index: int
    before_mean: float | None = None
    before_max: float | None = None
    after_mean: float | None = None
    after_max: float | None = None


@dataclass(frozen=True)
class SteeringEvidence:
    """What the steering did in one choice: positions the hook steered and skipped, and per-feature activations."""

    positions_steered: int
    positions_skipped: int
    skipped: tuple[tuple[int, int], ...]  # (position, token id) of the first skipped positions
    tokens: int  # generated tokens the statistics cover
    features: tuple[FeatureEvidenceStats, ...] = ()
    measured: bool = False


@dataclass(frozen=True)
class TokenActivations:
    position: int
    token_id: int
    phase: Literal["prompt", "generated"]
    indices: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class GenerationEvent:
    """One step's output for one choice.

    `text` is the newly decodable text (may be empty while UTF-8 or a stop string is pending);
    `tokens` the token logprobs produced in this event (empty when logprobs are off).
    A final event has `finish_reason` set.
    """

    choice: int
    text: str = ""
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    error: str | None = None
    failure: MillmError | None = None  # with finish_reason "error": the typed error to report, when there is one
    evidence: SteeringEvidence | None = None  # on a final event of a steered choice
    activations: tuple[TokenActivations, ...] | None = None  # on a final event, when the request asked for them

    @classmethod
    def token(cls, choice: int, text: str, token_id: int) -> GenerationEvent:
        """`GenerationEvent(choice=choice, text=text, token_ids=(token_id,))`: a token's event with nothing else
        (no logprobs, not final), as the worker sends one per row and step. Built without the frozen dataclass's
        `__init__` (nine `object.__setattr__` calls, ~12 us right after a forward); the other fields read the class
        defaults, so it equals, prints and compares as the constructor's."""
        ev = _new(cls)
        d = ev.__dict__
        d["choice"] = choice
        d["text"] = text
        d["token_ids"] = (token_id,)
        return ev


@dataclass(frozen=True)
class PromptInfo:
    """Sent once per request, before any GenerationEvent; always followed by at least one more item for the same
    request from the same prefill (its first token events, a finish or error event, or an exception)."""

    prompt_tokens: int
    prompt_logprobs: tuple[TokenLogprob | None, ...] = ()


@dataclass(frozen=True)
class FeatureActivation:
    index: int
    value: float


@dataclass(frozen=True)
class MonitorRecord:
    """SAE activations at one token of one request (BOS left out)."""

    request_id: str
    choice: int
    position: int
    token_id: int
    token: str
    phase: Literal["prompt", "generated", "embedding"]
    activations: tuple[FeatureActivation, ...] = field(default_factory=tuple)
