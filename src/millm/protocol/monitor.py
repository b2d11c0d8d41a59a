"""Wire shapes of activation monitoring: config, WebSocket frames, history and stats."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from millm.protocol.openai import AppliedSteering


class MonitorConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(None, description="Capture activations (null keeps the current setting).")
    features: list[int] | None = Field(None, description="Feature indices to capture; null or [] = top-k per token.")
    top_k: int | None = Field(None, ge=1, le=256, description="Features per token in top-k mode.")

    @field_validator("features")
    @classmethod
    def _distinct(cls, v: list[int] | None) -> list[int] | None:
        if v and len(set(v)) != len(v):
            raise ValueError("each feature index may appear once")
        return v


class MonitorConfigOut(BaseModel):
    enabled: bool
    paused: bool
    features: list[int] | None
    top_k: int
    history_requests: int = Field(description="Requests kept in history (oldest dropped first).")
    history_tokens_per_request: int


class FeatureValue(BaseModel):
    index: int
    value: float
    label: str | None = None


class ActivationFrame(BaseModel):
    """One WebSocket message: SAE activations at one token of one request."""

    type: Literal["activation"] = "activation"
    request_id: str
    choice: int
    position: int
    token_id: int
    token: str
    phase: Literal["prompt", "generated", "embedding"]
    activations: list[FeatureValue]


class FeatureStats(BaseModel):
    index: int
    label: str | None = None
    count: int
    min: float
    max: float
    mean: float


class RequestHistory(BaseModel):
    request_id: str
    tokens: int
    frames: list[ActivationFrame]
    stats: list[FeatureStats]
    steering: AppliedSteering | None = Field(None, description="The request's final steering receipt (with evidence).")


class HistoryList(BaseModel):
    data: list[RequestHistory]
    count: int


class StatsOut(BaseModel):
    tokens: int
    features: list[FeatureStats]
