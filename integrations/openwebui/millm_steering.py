"""
title: miLLM Steering
author: miLLM
version: 0.1.0
license: Apache-2.0
required_open_webui_version: 0.6.0
description: Per-chat SAE feature steering for models served by miLLM. A toggle in the message bar turns steering on for the chat; a profile (or INDEX:STRENGTH features) and an intensity that scales their strengths (steering.scale) are sent as miLLM's `steering` request object.
"""

# Install: Admin Panel -> Functions -> "+" (paste this file) or "Import" (this file), then enable it and
# make it global (or attach it to the miLLM models in Workspace -> Models -> Filters). In a chat, click the
# "miLLM Steering" toggle under the message box. Choose the profile and intensity in the admin valves
# (defaults for everyone) or in your user valves (Chat Controls -> Valves). See README.md beside this file.
#
# Only the standard library and pydantic are used, so Open WebUI installs nothing for it. It needs a miLLM
# whose steering object has `scale` (the intensity dial).

import math
import re
from typing import Any, Awaitable, Callable, Literal, Optional

from pydantic import BaseModel, Field

# Three sliders (an SVG drawn for this filter), shown on the toggle in the message bar.
ICON = (
    "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHdpZHRoPSIyNCIgaGVpZ2h0PS"
    "IyNCIgdmlld0JveD0iMCAwIDI0IDI0IiBmaWxsPSJub25lIiBzdHJva2U9ImN1cnJlbnRDb2xvciIgc3Ryb2tlLXdpZHRoPSIyIiBzdH"
    "Jva2UtbGluZWNhcD0icm91bmQiPjxwYXRoIGQ9Ik00IDZoMTZNNCAxMmgxNk00IDE4aDE2Ii8+PGNpcmNsZSBjeD0iOSIgY3k9IjYiIH"
    "I9IjIiIGZpbGw9ImN1cnJlbnRDb2xvciIvPjxjaXJjbGUgY3g9IjE1IiBjeT0iMTIiIHI9IjIiIGZpbGw9ImN1cnJlbnRDb2xvciIvPj"
    "xjaXJjbGUgY3g9IjciIGN5PSIxOCIgcj0iMiIgZmlsbD0iY3VycmVudENvbG9yIi8+PC9zdmc+"
)

FEATURE = re.compile(r"^\s*(\d+)\s*:\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


class SteeringError(Exception):
    """A mistake in the valves, shown to the user in the chat (miLLM's own errors come back from miLLM)."""


def parse_features(text: str) -> list[dict[str, Any]]:
    """'16:8, 102:-2.5' (commas, semicolons or spaces between pairs) -> [{"index": 16, "strength": 8.0}, ...]."""
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for part in [p for p in re.split(r"[,;\s]+", re.sub(r"\s*:\s*", ":", text)) if p]:
        m = FEATURE.match(part)
        if not m:
            raise SteeringError(f"miLLM Steering: {part!r} is not INDEX:STRENGTH (e.g. 16:8)")
        index, strength = int(m.group(1)), float(m.group(2))
        if index in seen:
            raise SteeringError(f"miLLM Steering: feature {index} is given twice")
        seen.add(index)
        out.append({"index": index, "strength": strength})
    return out


class Filter:
    class Valves(BaseModel):
        """Admin settings: the defaults for every user."""

        priority: int = Field(0, description="Order among filters (lower runs first).")
        profile: str = Field("", description="miLLM profile to steer with (e.g. yelling-demo); see `millm profile ls`.")
        features: str = Field("", description="Or features as INDEX:STRENGTH pairs, e.g. '16:8, 102:-2' (used when "
                                              "no profile is set).")
        mode: Literal["add", "clamp"] = Field("add", description="How features are applied (profiles bring their own).")
        intensity: Optional[float] = Field(None, ge=0.0, le=10.0, description="Multiplies every strength (miLLM's "
                                           "steering.scale); 0 turns steering off; empty: the profile's default, else 1.")
        steer_tasks: bool = Field(False, description="Also steer background tasks (titles, tags, follow-ups).")
        show_status: bool = Field(True, description="Show the steering used above each answer.")

    class UserValves(BaseModel):
        """Per-user choices (Chat Controls -> Valves); empty fields use the admin defaults."""

        profile: str = Field("", description="miLLM profile for your chats (empty: the admin default).")
        features: str = Field("", description="Or INDEX:STRENGTH pairs, e.g. '16:8' (used when no profile is set).")
        intensity: Optional[float] = Field(None, ge=0.0, le=10.0,
                                           description="Multiplies every strength; 0 turns steering off.")

    def __init__(self) -> None:
        self.valves = self.Valves()
        self.toggle = True  # a per-chat switch in the message bar; off = the filter does not run
        self.icon = ICON

    def choice(self, user_valves: Any = None) -> tuple[str, list[dict[str, Any]], Optional[float]]:
        """(profile, features, intensity) from the user's valves, falling back to the admin's."""
        uv = user_valves
        own_profile = (getattr(uv, "profile", "") or "").strip()
        own_features = (getattr(uv, "features", "") or "").strip()
        if own_profile:
            profile, text = own_profile, ""  # the user's own profile wins over the admin's features
        elif own_features:
            profile, text = "", own_features  # the user's own features win over the admin's profile
        else:
            profile, text = self.valves.profile.strip(), self.valves.features.strip()
        intensity = getattr(uv, "intensity", None)
        if intensity is None:
            intensity = self.valves.intensity
        if intensity is not None and not math.isfinite(intensity):
            raise SteeringError("miLLM Steering: intensity must be a finite number")
        features = [] if profile else parse_features(text)
        if not profile and not features:
            raise SteeringError("miLLM Steering is on but has nothing to steer with: set a profile (e.g. "
                                "yelling-demo) or features (e.g. 16:8) in its valves")
        return profile, features, intensity

    def steering(self, profile: str, features: list[dict[str, Any]], intensity: Optional[float]) -> dict[str, Any]:
        """The `steering` object for the request body."""
        if intensity == 0:
            return {"features": []}  # steering off, even a profile chosen through a '<model>+<profile>' id
        out: dict[str, Any] = {"profile": profile} if profile else {"features": features, "mode": self.valves.mode}
        if intensity is not None:
            out["scale"] = float(intensity)
        return out

    async def inlet(self, body: dict, __user__: Optional[dict] = None, __metadata__: Optional[dict] = None,
                    __event_emitter__: Optional[Callable[[dict], Awaitable[Any]]] = None) -> dict:
        metadata = __metadata__ or body.get("metadata") or {}
        if metadata.get("task") and not self.valves.steer_tasks:
            return body
        profile, features, intensity = self.choice((__user__ or {}).get("valves"))
        body["steering"] = self.steering(profile, features, intensity)
        if __event_emitter__ is not None and self.valves.show_status:
            await __event_emitter__({"type": "status", "data": {"description": describe(profile, features, intensity),
                                                                 "done": True}})
        return body


def describe(profile: str, features: list[dict[str, Any]], intensity: Optional[float]) -> str:
    if intensity == 0:
        return "miLLM steering: off (intensity 0)"
    what = f"profile {profile}" if profile else ", ".join(f"{f['index']}:{f['strength']:g}" for f in features)
    return f"miLLM steering: {what}" + ("" if intensity is None else f" x{intensity:g}")
