#!/usr/bin/env bash
# One GPU-machine run that checks and times everything (see docs/benchmarks.md):
#   CUDA tests, the CUDA engine next to llama.cpp on the same card and file, the queue benchmark.
# From the dev machine: /work/shared/device/stage.sh --peer; python3 -m gpu.kernel_cache --out .device/cubins;
# copy ggml-vocab-qwen2.gguf into .device/vocab/; then run with carry [.device, .whl]:
#   bash bench/device_all.sh
set -u
source .device/setup.sh || exit 1
if [ ! -f /tmp/site2/.done ]; then  # celery, redis-py, pydantic, ... (wheels carried in .whl)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site2 .whl/*.whl && touch /tmp/site2/.done
fi
export PYTHONPATH=$PWD:/tmp/site2:$PYTHONPATH PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 ORCD_CUBIN_DIR=$PWD/.device/cubins
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
W=/tmp/orcd-bench; mkdir -p $W
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader

echo "== 1. pytest -m cuda"
timeout 200 python3 -m pytest -p pytest_timeout -m cuda -q -k "not smollm2" ${PYTEST_ARGS:-} tests/gpu 2>&1 | tee $OUT/pytest.log | tail -6

echo "== 2. models (random weights, real qwen2 vocab)"
python3 - <<'PY'
import sys; sys.path.insert(0, "bench")
from pathlib import Path
import gpu_bench
for name in ("qwen-f16", "qwen-q8"):
    gpu_bench.write_model(Path("/tmp/orcd-bench"), name, Path(".device/vocab"))
PY

echo "== 3. llama.cpp peer (clean process) and the CUDA engine on the same files"
for m in qwen-f16 qwen-q8; do
  timeout 120 python3 -X faulthandler bench/gpu_bench.py --section llama.cpp --models $m --workdir $W \
    --out $OUT/bench.jsonl > $OUT/llama-$m.log 2>&1; echo "llama.cpp $m rc=$?"; tail -3 $OUT/llama-$m.log
  timeout 150 python3 bench/gpu_bench.py --section orcd --models $m --workdir $W --out $OUT/bench.jsonl \
    > $OUT/orcd-$m.log 2>&1; echo "orcd $m rc=$?"
done
grep -h '"section": "\(decode\|prefill\)"' $OUT/bench.jsonl | cut -c1-200

echo "== 4. queue: 64 concurrent jobs through Valkey + one CUDA worker vs the engine alone"
timeout 240 python3 bench/queue_bench.py --model $W/qwen-f16.gguf --backend cuda --jobs 64 --max-tokens 128 \
  --max-context 512 2>&1 | tee $OUT/queue.log | tail -16
