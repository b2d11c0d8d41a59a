"""On a CUDA GPU: 8-bit and 4-bit (nf4) bitsandbytes loads keep steering and monitoring working.

Same checks as tests/engine/test_quantization.py, on the GPU: the model is quantized, the residual
stream is bf16/fp16, the SAE sits on the GPU in that dtype, steering changes greedy output and
monitoring reports finite activations. Skipped without CUDA (tests/gpu/conftest.py).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from millm.engine.intervention import MonitorConfig
from millm.engine.types import FeatureStrength, GenerationRequest, SamplingParams, SteeringSpec
from millm.engine.worker import Worker
from millm.services.models import ModelService
from millm.services.monitoring import MonitorService
from millm.services.saes import SaeService
from tests.engine.test_quantization import QUANTIZED_LINEAR, generate, residual_dtype

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantized_gpu_model_steers_and_monitors(quantization: str, tiny_model_dir: Path, tiny_sae_dir: Path) -> None:
    worker = Worker(max_batch_size=4)
    worker.start()
    saes = SaeService(worker=worker, monitor=MonitorService(apply_config=lambda cfg: None))
    models = ModelService(worker=worker, saes=saes, defaults={"device": "cuda", "dtype": "auto"})

    async def setup() -> Any:
        result = await models.load(str(tiny_model_dir), quantization=quantization)
        await saes.attach(str(tiny_sae_dir))
        return result

    try:
        result = asyncio.run(setup())
        lm = worker.loaded
        assert lm is not None and lm.device.type == "cuda" and lm.quantization == quantization
        assert lm.dtype in (torch.bfloat16, torch.float16)
        assert any(type(m).__name__ == QUANTIZED_LINEAR[quantization] for m in lm.model.modules())
        assert result.estimate is not None and result.estimate.device.startswith("cuda")
        assert result.estimate.params == lm.num_parameters
        sae = saes.attached.sae
        assert sae.W_dec.device.type == "cuda" and sae.W_dec.dtype == lm.dtype

        ids = lm.tokenizer("Hello world").input_ids
        assert residual_dtype(worker, torch.tensor([ids], device=lm.device)) == lm.dtype

        records: list[Any] = []
        worker.monitor_sink = records.extend
        worker.call(lambda w: w.intervention.set_monitor(MonitorConfig(enabled=True, top_k=4))).result(timeout=60)
        params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
        plain = generate(worker, GenerationRequest("plain", tuple(ids), params))
        steered = generate(worker, GenerationRequest(
            "steered", tuple(ids), params, steering=SteeringSpec((FeatureStrength(7, 30.0),))))
        assert plain != steered
        values = [a.value for r in records if r.request_id == "plain" for a in r.activations]
        assert values and all(math.isfinite(v) for v in values)
    finally:
        asyncio.run(models.unload())
        worker.stop()
