"""The demo's steering profiles, as a `millm.profiles` bundle the profile store can import.

Contract: `build_profiles(demo, labels)` returns `{"format": "millm.profiles", "format_version": 1,
"profiles": [...]}` with `yelling-demo` (the CAPS feature at the documented strength) first and
one profile per measured topic (named after the topic, e.g. `ocean`), all in additive mode
against the demo model and SAE described by `demo` (the `demo.json` manifest).
"""

from __future__ import annotations

from typing import Any

BUNDLE_FORMAT = "millm.profiles"
PROFILE_FORMAT = "millm.profile"
FORMAT_VERSION = 1


def _profile(
    demo: dict[str, Any], *, name: str, description: str, feature: int, strength: float, label: str
) -> dict[str, Any]:
    return {
        "format": PROFILE_FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description,
        "model": demo["model_id"],
        "sae": {"id": demo["sae_id"], "hook_name": demo["hook_name"], "layer": demo["layer"], "d_sae": demo["d_sae"]},
        "mode": "add",
        "features": [{"index": feature, "strength": strength, "label": label}],
    }


def build_profiles(demo: dict[str, Any], labels: dict[str, dict[str, Any]]) -> dict[str, Any]:
    caps = demo["caps_feature"]
    profiles = [
        _profile(
            demo, name="yelling-demo", feature=caps, strength=demo["caps_strength"],
            label=str(labels[str(caps)]["label"]),
            description="Makes the demo model answer in ALL CAPS: the SAE's yelling feature, added at its "
            "documented strength.",
        )
    ]
    for topic, feature in demo["topic_features"].items():
        profiles.append(
            _profile(
                demo, name=topic, feature=feature, strength=demo["topic_strengths"][topic],
                label=str(labels[str(feature)]["label"]),
                description=f"Steers the demo model's stories towards the {topic} topic.",
            )
        )
    return {"format": BUNDLE_FORMAT, "format_version": FORMAT_VERSION, "profiles": profiles}
