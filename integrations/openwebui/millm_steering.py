"""
title: miLLM Steering
author: miLLM
version: 0.1.0
license: Apache-2.0
required_open_webui_version: 0.6.0
description: Per-chat SAE feature steering for models served by miLLM. A toggle in the message bar turns steering on for the chat; a profile (or INDEX:STRENGTH features) and an intensity that scales their strengths are sent as miLLM's `steering` request object.
"""

# Install: Admin Panel -> Functions -> "+" (paste this file) or "Import" (this file), then enable it and
# make it global (or attach it to the miLLM models in Workspace -> Models -> Filters). In a chat, click the
# "miLLM Steering" toggle under the message box. Choose the profile and intensity in the admin valves
# (defaults for everyone) or in your user valves (Chat Controls -> Valves). See README.md beside this file.
#
# Only the standard library and pydantic are used, so Open WebUI installs nothing for it.

import asyncio
import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
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
    """A configuration or miLLM error, shown to the user in the chat."""


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


def scaled(features: list[dict[str, Any]], intensity: float) -> list[dict[str, Any]]:
    return [{"index": int(f["index"]), "strength": round(float(f["strength"]) * intensity, 6)} for f in features]


class Filter:
    class Valves(BaseModel):
        """Admin settings: the defaults for every user."""

        priority: int = Field(0, description="Order among filters (lower runs first).")
        profile: str = Field("", description="miLLM profile to steer with (e.g. yelling-demo); see `millm profile ls`.")
        features: str = Field("", description="Or features as INDEX:STRENGTH pairs, e.g. '16:8, 102:-2' (used when "
                                              "no profile is set).")
        mode: Literal["add", "clamp"] = Field("add", description="How features are applied (profiles bring their own).")
        intensity: float = Field(1.0, ge=-10.0, le=10.0, description="Multiplies every strength; 0 turns steering off.")
        millm_url: str = Field("", description="miLLM server URL, only needed to scale a profile (intensity other than "
                                               "1); empty: the model's OpenAI connection URL without /v1.")
        api_key: str = Field("", description="miLLM API key for millm_url (empty: the connection's key).")
        steer_tasks: bool = Field(False, description="Also steer background tasks (titles, tags, follow-ups).")
        show_status: bool = Field(True, description="Show the steering used above each answer.")

    class UserValves(BaseModel):
        """Per-user choices (Chat Controls -> Valves); empty fields use the admin defaults."""

        profile: str = Field("", description="miLLM profile for your chats (empty: the admin default).")
        features: str = Field("", description="Or INDEX:STRENGTH pairs, e.g. '16:8' (used when no profile is set).")
        intensity: Optional[float] = Field(None, ge=-10.0, le=10.0,
                                           description="Multiplies every strength; 0 turns steering off.")

    def __init__(self) -> None:
        self.valves = self.Valves()
        self.toggle = True  # a per-chat switch in the message bar; off = the filter does not run
        self.icon = ICON

    # ------------------------------------------------------------------ choosing the steering

    def choice(self, user_valves: Any = None) -> tuple[str, list[dict[str, Any]], float]:
        """(profile, features, intensity) from the user's valves, falling back to the admin's."""
        uv = user_valves
        profile = ((getattr(uv, "profile", "") or "").strip()) or self.valves.profile.strip()
        text = ((getattr(uv, "features", "") or "").strip()) or self.valves.features.strip()
        if (getattr(uv, "profile", "") or "").strip():
            text = ""  # the user's own profile wins over the admin's features
        elif (getattr(uv, "features", "") or "").strip():
            profile = ""  # the user's own features win over the admin's profile
        intensity = getattr(uv, "intensity", None)
        intensity = self.valves.intensity if intensity is None else float(intensity)
        if not math.isfinite(intensity):
            raise SteeringError("miLLM Steering: intensity must be a finite number")
        features = [] if profile else parse_features(text)
        if not profile and not features:
            raise SteeringError("miLLM Steering is on but has nothing to steer with: set a profile (e.g. "
                                "yelling-demo) or features (e.g. 16:8) in its valves")
        return profile, features, intensity

    async def steering(self, profile: str, features: list[dict[str, Any]], intensity: float,
                       connection: Callable[[], Awaitable[tuple[str, str]]]) -> dict[str, Any]:
        """The `steering` object for the request body."""
        if intensity == 0:
            return {"features": []}  # steering off, even a profile chosen through a '<model>+<profile>' id
        if not profile:
            return {"features": scaled(features, intensity), "mode": self.valves.mode}
        if intensity == 1:
            return {"profile": profile}
        url, key = await connection()
        doc = await asyncio.to_thread(fetch_profile, url, key, profile)
        return {"features": scaled(doc["features"], intensity), "mode": doc.get("mode", "add"),
                "normalize": bool(doc.get("normalize", False))}

    async def connection(self, model: Optional[dict]) -> tuple[str, str]:
        """miLLM's base URL and key: the valves, else the Open WebUI OpenAI connection that serves the model."""
        url, key = self.valves.millm_url.strip(), self.valves.api_key.strip()
        if not url and model and "urlIdx" in model:
            try:
                from open_webui.routers.openai import get_openai_connection  # type: ignore[import-not-found]

                conn_url, conn_key, _ = await get_openai_connection(model["urlIdx"])
                url, key = re.sub(r"/v1/?$", "", conn_url.rstrip("/")), key or conn_key
            except Exception:  # noqa: BLE001 - an Open WebUI without this helper: ask for the valve
                url = ""
        if not url:
            raise SteeringError("miLLM Steering: set the millm_url valve to scale a profile's strengths")
        return url.rstrip("/"), key

    # ------------------------------------------------------------------ Open WebUI hooks

    async def inlet(self, body: dict, __user__: Optional[dict] = None, __metadata__: Optional[dict] = None,
                    __model__: Optional[dict] = None,
                    __event_emitter__: Optional[Callable[[dict], Awaitable[Any]]] = None) -> dict:
        metadata = __metadata__ or body.get("metadata") or {}
        if metadata.get("task") and not self.valves.steer_tasks:
            return body
        user_valves = (__user__ or {}).get("valves")
        profile, features, intensity = self.choice(user_valves)
        body["steering"] = await self.steering(profile, features, intensity, lambda: self.connection(__model__))
        if __event_emitter__ is not None and self.valves.show_status:
            await __event_emitter__({"type": "status", "data": {"description": describe(profile, features, intensity),
                                                                 "done": True}})
        return body


def describe(profile: str, features: list[dict[str, Any]], intensity: float) -> str:
    if intensity == 0:
        return "miLLM steering: off (intensity 0)"
    what = f"profile {profile}" if profile else ", ".join(f"{f['index']}:{f['strength']:g}" for f in features)
    return f"miLLM steering: {what}" + ("" if intensity == 1 else f" x{intensity:g}")


def fetch_profile(base_url: str, key: str, name: str) -> dict[str, Any]:
    """GET /api/profiles/{name} from miLLM; errors as SteeringError with miLLM's message."""
    req = urllib.request.Request(f"{base_url}/api/profiles/{urllib.parse.quote(name, safe='')}",
                                 headers={"Accept": "application/json",
                                          **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read())["error"]["message"]
        except Exception:  # noqa: BLE001
            message = f"HTTP {e.code}"
        raise SteeringError(f"miLLM Steering: profile {name!r}: {message}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise SteeringError(f"miLLM Steering: cannot read profile {name!r} from {base_url}: {e}") from None
