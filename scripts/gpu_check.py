"""GPU checks, run on a CUDA machine: generation through the server, steering on the GPU (batched rows
equal solo rows, per-request steering changes output), bitsandbytes 8-bit and 4-bit loads with steering
and monitoring. Prints one JSON report (and writes it to $OUT/gpu_check.json when OUT is set).

Usage: python scripts/gpu_check.py [--model DIR] [--sae DIR]   (defaults: the bundled demo)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from millm import demo  # noqa: E402
from millm.engine import hookpoints  # noqa: E402
from millm.engine.intervention import MonitorConfig, SaeIntervention  # noqa: E402
from millm.engine.model_loading import load_model  # noqa: E402
from millm.engine.types import FeatureStrength, GenerationEvent, GenerationRequest, SamplingParams, SteeringSpec  # noqa: E402
from millm.engine.worker import Worker  # noqa: E402
from millm.sae.loading import load_sae  # noqa: E402

report: dict = {}
# GPU_CHECK_DEVICE=cpu GPU_CHECK_SMALL=1 gives a quick dry run of the script on a CPU machine.
DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
SMALL = bool(os.environ.get("GPU_CHECK_SMALL"))


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def step(name):
    def deco(fn):
        def run(*a, **k):
            t = time.perf_counter()
            try:
                report[name] = {"ok": True, **(fn(*a, **k) or {})}
            except Exception as e:  # noqa: BLE001
                report[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-1500:]}
            report[name]["seconds"] = round(time.perf_counter() - t, 2)
            print(name, json.dumps(report[name])[:1500], flush=True)
            if os.environ.get("OUT"):
                Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(report, indent=2))
        return run
    return deco


def run_requests(worker: Worker, reqs: list[GenerationRequest]) -> dict[str, list[int]]:
    out = {r.request_id: [] for r in reqs}
    left = [sum(r.n for r in reqs)]
    done = threading.Event()
    lock = threading.Lock()

    def sink_for(rid):
        def sink(ev):
            if isinstance(ev, Exception):
                out[rid].append(repr(ev))
                done.set()
            elif isinstance(ev, GenerationEvent):
                out[rid].extend(ev.token_ids)
                if ev.finish_reason:
                    with lock:
                        left[0] -= 1
                        if left[0] == 0:
                            done.set()
        return sink

    for r in reqs:
        worker.submit(r, sink_for(r.request_id))
    done.wait(300)
    return out


def make_worker(model_dir: Path, sae_dir: Path, **load_kw) -> Worker:
    w = Worker(max_batch_size=16)
    w.loaded = load_model(str(model_dir), **load_kw)
    sae = load_sae(sae_dir)
    hp = hookpoints.resolve_hookpoint(w.loaded.model, sae.cfg.hook_name)
    sae = sae.to(device=w.loaded.device, dtype=w.loaded.dtype)
    w.intervention = SaeIntervention(sae=sae, hookpoint=hp, attach_fn=hookpoints.attach, device=w.loaded.device,
                                     dtype=w.loaded.dtype)
    w.start()
    return w


def steer(i: int, caps: int, d_sae: int) -> SteeringSpec | None:
    if i % 3 == 0:
        return None
    idx = caps if i % 3 == 1 else (caps * 7 + i) % d_sae
    return SteeringSpec((FeatureStrength(idx, 6.0 + i),), mode="add" if i % 2 else "clamp")


@step("cuda_generation_and_batched_steering")
def check_worker(model_dir: Path, sae_dir: Path, caps: int) -> dict:
    w = make_worker(model_dir, sae_dir, device=DEVICE, dtype="bfloat16")
    tok = w.loaded.tokenizer
    d_sae = w.intervention.sae.cfg.d_sae
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"Tell me a story number {i}."}],
                                       tokenize=False, add_generation_prompt=True) for i in range(8)]
    params = SamplingParams(max_tokens=48, temperature=0.0, ignore_eos=True)
    reqs = [GenerationRequest(f"r{i}", tuple(tok(p, add_special_tokens=False).input_ids), params,
                              steering=steer(i, caps, d_sae)) for i, p in enumerate(prompts)]
    solo = {}
    for r in reqs:
        solo.update(run_requests(w, [r]))
    t = time.perf_counter()
    batched = run_requests(w, reqs)
    dt = time.perf_counter() - t
    same = [batched[k] == solo[k] for k in solo]
    first_diff = {k: next((j for j, (a, b) in enumerate(zip(batched[k], solo[k], strict=False)) if a != b), None)
                  for k in solo if batched[k] != solo[k]}
    steered_differs = solo["r1"] != run_requests(w, [GenerationRequest("x", reqs[1].prompt_ids, params)])["x"]
    text = tok.decode(solo["r1"], skip_special_tokens=True)
    w.stop()
    return {"device": DEVICE, "batched_equals_solo": same, "first_diff_at": first_diff,
            "steering_changes_output": steered_differs, "batch8_tokens_per_s": round(8 * 48 / dt, 1),
            "caps_sample": text[:160]}


@step("bitsandbytes")
def check_bnb(model_dir: Path, sae_dir: Path, caps: int, strength: float) -> dict:
    out = {}
    for q in ("8bit", "4bit"):
        w = make_worker(model_dir, sae_dir, device=DEVICE, dtype="float16", quantization=q)
        tok = w.loaded.tokenizer
        prompt = tok.apply_chat_template([{"role": "user", "content": "Tell me a story."}], tokenize=False,
                                         add_generation_prompt=True)
        ids = tuple(tok(prompt, add_special_tokens=False).input_ids)
        params = SamplingParams(max_tokens=40, temperature=0.0)
        plain = run_requests(w, [GenerationRequest("p", ids, params)])["p"]
        spec = SteeringSpec((FeatureStrength(caps, strength),))
        steered = run_requests(w, [GenerationRequest("s", ids, params, steering=spec)])["s"]
        records = []
        w.monitor_sink = records.extend
        w.intervention.set_monitor(MonitorConfig(enabled=True, features=(caps,)))
        run_requests(w, [GenerationRequest("m", ids, params, steering=spec)])
        gen = [r.activations[0].value for r in records if r.phase == "generated"]
        plain_text, steered_text = (tok.decode(x, skip_special_tokens=True) for x in (plain, steered))
        letters = [c for c in steered_text if c.isalpha()]
        out[q] = {"residual_dtype": str(w.loaded.dtype), "sae_dtype": str(w.intervention.sae.dtype),
                  "plain": plain_text[:120], "steered": steered_text[:120],
                  "steered_upper_fraction": round(sum(c.isupper() for c in letters) / max(1, len(letters)), 3),
                  "caps_feature_mean_on_generated": round(sum(gen) / max(1, len(gen)), 3),
                  "memory_allocated_mb": round(torch.cuda.memory_allocated() / 2**20, 1) if DEVICE == "cuda" else None}
        w.stop()
        del w
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return out


@step("server_openai_sdk")
def check_server(model_dir: Path, sae_dir: Path, caps: int, strength: float) -> dict:
    import openai

    from millm.config import Settings
    from tests.conftest import free_port, start_server

    live = start_server(Settings(model=str(model_dir), sae=str(sae_dir), device=DEVICE, port=free_port(),  # type: ignore[arg-type]
                                 data_dir=Path("/tmp/millm-gpu-data")))
    try:
        c = openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0)
        model = c.models.list().data[0].id
        msg = [{"role": "user", "content": "Tell me a story."}]
        t = time.perf_counter()
        r = c.chat.completions.create(model=model, messages=msg, max_tokens=64, temperature=0)
        plain_s = time.perf_counter() - t
        s = c.chat.completions.create(model=model, messages=msg, max_tokens=64, temperature=0,
                                      extra_body={"steering": {"features": [{"index": caps, "strength": strength}]}})
        chunks = list(c.chat.completions.create(model=model, messages=msg, max_tokens=32, temperature=0,
                                                stream=True))
        return {"plain": r.choices[0].message.content[:120], "steered": s.choices[0].message.content[:120],
                "stream_chunks": len(chunks), "plain_request_s": round(plain_s, 3),
                "status": __import__("httpx").get(live.url + "/api/status").json()["model"]}
    finally:
        live.stop()


def _timed(worker: Worker, reqs: list[GenerationRequest]) -> tuple[float, float]:
    """(seconds, time to first event of the first request) for running reqs together."""
    first = {}
    t0 = time.perf_counter()
    orig = worker.submit

    def submit(r, sink):
        def wrapped(ev, sink=sink):
            first.setdefault(r.request_id, time.perf_counter() - t0)
            sink(ev)
        return orig(r, wrapped)

    worker.submit = submit  # type: ignore[method-assign]
    try:
        run_requests(worker, reqs)
    finally:
        worker.submit = orig  # type: ignore[method-assign]
    return time.perf_counter() - t0, min(first.values())


@step("throughput")
def check_throughput(model_dir: Path, sae_dir: Path, caps: int) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from millm.engine.model_loading import LoadedModel

    out = {}
    demo_worker = make_worker(model_dir, sae_dir, device=DEVICE, dtype="bfloat16")
    tok = demo_worker.loaded.tokenizer
    size = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2) if SMALL else dict(
        hidden_size=1024, intermediate_size=2816, num_hidden_layers=24)
    big_cfg = LlamaConfig(vocab_size=len(tok), num_attention_heads=16, num_key_value_heads=16,
                          max_position_embeddings=4096, **size)
    big = LlamaForCausalLM(big_cfg).to(DEVICE, torch.bfloat16).eval()
    big_lm = LoadedModel(model_id="random-350m", model=big, tokenizer=tok, device=torch.device(DEVICE),
                         dtype=torch.bfloat16, quantization="none", context_length=4096,
                         eos_ids=frozenset(), special_ids=frozenset(tok.all_special_ids), bos_id=tok.bos_token_id,
                         num_parameters=sum(p.numel() for p in big.parameters()), source="random", revision=None)
    for name, w in (("demo", demo_worker), ("random_350m", None)):
        if w is None:
            w = Worker(max_batch_size=16)
            w.loaded = big_lm
            w.start()
        lm = w.loaded
        prompt = torch.randint(10, len(tok) - 10, (64,), generator=torch.Generator().manual_seed(0)).tolist()
        new = 16 if SMALL else 128
        params = SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True)
        reps = 3
        ids = torch.tensor([prompt], device=DEVICE)

        def hf_generate() -> float:
            if w.intervention is not None:
                w.intervention.set_plan(None)  # the worker is idle; run the bare model
            with torch.inference_mode():
                sync()
                t = time.perf_counter()
                lm.model.generate(ids, max_new_tokens=new, do_sample=False, min_new_tokens=new)
                sync()
                return new / (time.perf_counter() - t)

        modes = {"unsteered": None}
        d_sae = w.intervention.sae.cfg.d_sae if w.intervention is not None else 0
        if w.intervention is not None:
            modes["add"] = SteeringSpec((FeatureStrength(caps, 4.0),))
            modes["clamp"] = SteeringSpec((FeatureStrength(caps, 4.0),), mode="clamp")

        def worker_b1(spec: SteeringSpec | None) -> tuple[float, float]:
            secs, ttft = _timed(w, [GenerationRequest(f"b1-{time.perf_counter_ns()}", tuple(prompt), params,
                                                      steering=spec)])
            return new / secs, ttft

        def concurrent(conc: int) -> float:
            reqs = [GenerationRequest(f"c{conc}-{i}-{time.perf_counter_ns()}", tuple(prompt[i % 7:]), params,
                                      steering=(SteeringSpec((FeatureStrength((caps + i) % d_sae, 2.0 + i),))
                                                if d_sae and i % 4 else None))
                    for i in range(conc)]
            secs, _ = _timed(w, reqs)
            return conc * new / secs

        hf_generate()  # warm-up: kernels, clocks
        for spec in modes.values():
            worker_b1(spec)
        samples: dict[str, list[float]] = {}
        for _ in range(reps):  # interleaved, medians reported
            samples.setdefault("hf_generate_b1_tok_s", []).append(hf_generate())
            for mode, spec in modes.items():
                tps, ttft = worker_b1(spec)
                samples.setdefault(f"worker_b1_{mode}_tok_s", []).append(tps)
                samples.setdefault(f"ttft_ms_{mode}", []).append(ttft * 1000)
            for conc in (1, 8, 16):
                samples.setdefault(f"concurrency_{conc}_aggregate_tok_s", []).append(concurrent(conc))
        res = {"params": lm.num_parameters, "reps": reps}
        res.update({k: round(sorted(v)[len(v) // 2], 1) for k, v in samples.items()})
        out[name] = res
        w.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=demo.assets_dir() / "model")
    ap.add_argument("--sae", type=Path, default=demo.assets_dir() / "sae")
    args = ap.parse_args()
    meta_path = demo.assets_dir() / "demo.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"caps_feature": 0, "caps_strength": 8.0}
    import transformers

    report["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                          "cuda": torch.version.cuda,
                          "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"}
    print(report["versions"], flush=True)
    only = os.environ.get("GPU_CHECK_ONLY")
    if only == "throughput":
        check_throughput(args.model, args.sae, meta["caps_feature"])
        return
    check_worker(args.model, args.sae, meta["caps_feature"])
    check_server(args.model, args.sae, meta["caps_feature"], meta["caps_strength"])
    check_throughput(args.model, args.sae, meta["caps_feature"])
    if DEVICE == "cuda" or os.environ.get("GPU_CHECK_BNB"):
        check_bnb(args.model, args.sae, meta["caps_feature"], meta["caps_strength"])
    text = json.dumps(report, indent=2)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(text)


if __name__ == "__main__":
    main()
