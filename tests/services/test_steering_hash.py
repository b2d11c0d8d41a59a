"""The canonical form of applied steering and its SHA-256: the vectors published in docs/api.md reproduce."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from millm.services.steering_hash import canonical_form, steering_hash

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"

# (inputs, canonical form, sha256): the same three vectors as docs/api.md's "Steering hash" section.
VECTORS = [
    (dict(sae="millm-demo-sae", d_sae=1536, hook_name="blocks.0.hook_resid_post", layer=0, mode="add",
          normalize=False, steer_special_tokens=True, features=[(16, 8.0)]),
     '{"d_sae":1536,"features":[[16,8.0]],"hook_name":"blocks.0.hook_resid_post","layer":0,"mode":"add",'
     '"normalize":false,"sae":"millm-demo-sae","steer_special_tokens":true,"v":1}',
     "39eec264795cb8e4d2420cc4638e8e7041dc7a457824f1f5aa6e658a4de1d8bf"),
    (dict(sae="millm-demo-sae", d_sae=1536, hook_name="blocks.0.hook_resid_post", layer=0, mode="add",
          normalize=True, steer_special_tokens=False, features=[(700, -0.5), (16, 4.1)]),
     '{"d_sae":1536,"features":[[16,4.1],[700,-0.5]],"hook_name":"blocks.0.hook_resid_post","layer":0,"mode":"add",'
     '"normalize":true,"sae":"millm-demo-sae","steer_special_tokens":false,"v":1}',
     "e9cc156b0ed81ec879191b6512bf2ce4b100e974302299fb95a13251f91c32be"),
    (dict(sae="google/gemma-scope-2b-pt-res:layer_12/width_16k/average_l0_82", d_sae=16384,
          hook_name="blocks.12.hook_resid_post", layer=12, mode="clamp", normalize=False, steer_special_tokens=True,
          features=[(12082, 240.0), (3, 1e-05)]),
     '{"d_sae":16384,"features":[[3,1e-05],[12082,240.0]],"hook_name":"blocks.12.hook_resid_post","layer":12,'
     '"mode":"clamp","normalize":false,"sae":"google/gemma-scope-2b-pt-res:layer_12/width_16k/average_l0_82",'
     '"steer_special_tokens":true,"v":1}',
     "492af79af8b87363bed50c4ffadb8ef76ace765cbeb914a89f1cdb0284bd3c6f"),
]


@pytest.mark.parametrize(("inputs", "canonical", "digest"), VECTORS)
def test_published_vectors_reproduce(inputs, canonical, digest):
    assert canonical_form(**inputs) == canonical
    assert hashlib.sha256(canonical.encode()).hexdigest() == digest == steering_hash(canonical)
    docs = DOCS.read_text()
    assert canonical in docs and digest in docs  # the docs publish exactly these


def test_canonical_form_ignores_order_and_negative_zero_and_normalize_for_clamp():
    base = dict(sae="s", d_sae=8, hook_name="h", layer=0, normalize=False, steer_special_tokens=True)
    assert canonical_form(**base, mode="add", features=[(2, 1.0), (1, 0.0)]) == canonical_form(
        **base, mode="add", features=[(1, -0.0), (2, 1.0)])
    assert canonical_form(**{**base, "normalize": True}, mode="clamp", features=[(1, 1.0)]) == canonical_form(
        **base, mode="clamp", features=[(1, 1.0)])
    assert canonical_form(**base, mode="add", features=[(1, 1.0)]) != canonical_form(
        **base, mode="add", features=[(1, 1.5)])
