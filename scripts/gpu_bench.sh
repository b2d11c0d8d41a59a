#!/bin/bash
# One GPU device run: the GPU tests, then `make bench`'s suite on CUDA without and with CUDA graphs, then the
# size and family sweep's GPU column (benchmarks/sweep.py; the 350M models are left out by default to fit).
# Run from the repository root on the GPU machine. Wheels the GPU image lacks (fastapi, pydantic, uvicorn,
# sse-starlette, sqlalchemy, openai, bitsandbytes, httpx2, ...) go in .whl/ and .whl-hub/ (see
# docs/benchmarks-notes.md, "GPU"); results and server logs go under $OUT (default ./gpu-out).
set -u
OUT=${OUT:-gpu-out}
T0=$(date +%s)
if ls .whl/*.whl >/dev/null 2>&1; then
  [ -d /tmp/site/fastapi ] || pip install --no-index --no-deps --target /tmp/site -q .whl/*.whl .whl-hub/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
mkdir -p "$OUT/docs" "$OUT/logs"
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name(0))"
echo "=== tests $(( $(date +%s) - T0 ))s"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu tests/engine/test_cuda_graphs.py > "$OUT/tests.txt" 2>&1; echo "rc $?"; tail -3 "$OUT/tests.txt"
echo "=== bench $(( $(date +%s) - T0 ))s"
timeout 270 python3 -m benchmarks.run --device cuda --quick --no-sweep --out "$OUT/docs" --logs "$OUT/logs" \
  > "$OUT/bench.log" 2>&1; echo "rc $?"; tail -3 "$OUT/bench.log"
echo "=== bench with CUDA graphs $(( $(date +%s) - T0 ))s"
timeout 150 python3 -m benchmarks.run --device cuda --quick --cuda-graphs --server-only --out "$OUT/docs" \
  --logs "$OUT/logs" > "$OUT/bench-graphs.log" 2>&1; echo "rc $?"; tail -3 "$OUT/bench-graphs.log"
echo "=== size and family sweep (bf16 vs model.generate; SWEEP_ONLY to choose models) $(( $(date +%s) - T0 ))s"
timeout 240 python3 -m benchmarks.sweep --device cuda --quick \
  --only "${SWEEP_ONLY:-llama-2m,llama-25m,gemma2-25m,qwen2-25m,llama-100m}" --out "$OUT/docs" \
  > "$OUT/sweep.log" 2>&1; echo "rc $?"; tail -3 "$OUT/sweep.log"
echo "=== done $(( $(date +%s) - T0 ))s"
