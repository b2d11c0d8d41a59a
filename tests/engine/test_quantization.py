"""bitsandbytes 8-bit and 4-bit (nf4) on the CPU: steering and monitoring keep working.

The tiny Llama is loaded through ModelService (memory estimate, load, swap) and the SAE attached
through SaeService, as the server does; the residual stream must stay bf16 and the SAE be cast
to it. Slow-ish on two cores (bitsandbytes' CPU int8 path), so prompts and outputs are short.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from millm.engine import hookpoints
from millm.engine.intervention import MonitorConfig
from millm.engine.model_loading import load_model
from millm.engine.types import FeatureStrength, GenerationEvent, GenerationRequest, SamplingParams, SteeringSpec
from millm.engine.worker import Worker
from millm.errors import InvalidRequest
from millm.services.load_options import LoadDefaults, LoadOptions
from millm.services.models import ModelService
from millm.services.monitoring import MonitorService
from millm.services.saes import SaeService

pytestmark = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")

QUANTIZED_LINEAR = {"8bit": "Linear8bitLt", "4bit": "Linear4bit"}


def generate(worker: Worker, request: GenerationRequest) -> list[int]:
    tokens: list[int] = []
    done = threading.Event()

    def sink(ev: Any) -> None:
        if isinstance(ev, BaseException):
            tokens.append(-1)
            done.set()
        elif isinstance(ev, GenerationEvent):
            tokens.extend(ev.token_ids)
            if ev.finish_reason:
                done.set()

    worker.submit(request, sink)
    assert done.wait(120)
    assert -1 not in tokens
    return tokens


def residual_dtype(worker: Worker, ids: torch.Tensor) -> torch.dtype:
    def probe(w: Worker) -> torch.dtype:
        seen: dict[str, torch.dtype] = {}

        def spy(h: torch.Tensor) -> None:
            seen["dtype"] = h.dtype

        assert w.intervention is not None and w.loaded is not None
        with hookpoints.attached(w.intervention.hookpoint, spy):
            w.loaded.model(input_ids=ids)
        return seen["dtype"]

    return worker.call(probe).result(timeout=60)


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantized_cpu_model_steers_and_monitors(quantization: str, tiny_model_dir: Path, tiny_sae_dir: Path) -> None:
    worker = Worker(max_batch_size=2)
    worker.start()
    saes = SaeService(worker=worker, monitor=MonitorService(apply_config=lambda cfg: None))
    models = ModelService(worker=worker, saes=saes, defaults=LoadDefaults(device="cpu", dtype="auto"))

    async def setup() -> Any:
        result = await models.load(str(tiny_model_dir), options=LoadOptions(quantization=quantization))
        await saes.attach(str(tiny_sae_dir))
        return result

    try:
        result = asyncio.run(setup())
        lm = worker.loaded
        assert lm is not None and lm.quantization == quantization and lm.dtype == torch.bfloat16
        assert any(type(m).__name__ == QUANTIZED_LINEAR[quantization] for m in lm.model.modules())
        # The parameter count is the model's, not the packed storage's; the estimate is quantized.
        est = result.estimate
        assert est is not None and est.quantization == quantization and est.params == lm.num_parameters
        assert est.weights_bytes < lm.num_parameters * 2
        assert saes.attached is not None and saes.attached.sae.W_dec.dtype == torch.bfloat16

        ids = lm.tokenizer("Hello world").input_ids
        assert residual_dtype(worker, torch.tensor([ids])) == torch.bfloat16

        records: list[Any] = []
        worker.monitor_sink = records.extend
        worker.call(lambda w: w.intervention.set_monitor(MonitorConfig(enabled=True, top_k=4))).result(timeout=60)
        params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
        plain = generate(worker, GenerationRequest("plain", tuple(ids), params))
        steered = generate(worker, GenerationRequest(
            "steered", tuple(ids), params, steering=SteeringSpec((FeatureStrength(7, 30.0),))))
        assert plain != steered

        mine = [r for r in records if r.request_id == "plain"]
        assert {r.phase for r in mine} == {"prompt", "generated"}
        values = [a.value for r in mine for a in r.activations]
        assert values and all(math.isfinite(v) for v in values) and any(v > 0 for v in values)
    finally:
        asyncio.run(models.unload())
        worker.stop()


def test_quantization_is_refused_clearly_where_bitsandbytes_cannot_run(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidRequest, match="no backend for device 'mps'") as err:
        load_model(str(tiny_model_dir), device="mps", quantization="4bit")
    assert err.value.param == "quantization"
    with pytest.raises(InvalidRequest, match="float16/bfloat16") as err:
        load_model(str(tiny_model_dir), device="cpu", dtype="float32", quantization="8bit")
    assert err.value.param == "dtype"

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a))
    with pytest.raises(InvalidRequest, match=r"bitsandbytes is not installed \(pip install 'millm\[quant\]'\)"):
        load_model(str(tiny_model_dir), device="cpu", quantization="8bit")
