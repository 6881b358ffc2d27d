#!/usr/bin/env bash
# The GPU-machine runs of docs/benchmarks.md, by step: bash bench/device_run.sh STEP... where STEP is
#   tests   pytest -m cuda tests/gpu (kernels, engines, allocation failure; the real-SmolLM2 test needs its file:
#           carry it and set PYTEST_K=" ")
#   probe   bench/llama_probe.py on the Qwen F16 file: which way of loading the llama.cpp peer works
#   bench   bench/gpu_bench.py: the CUDA engine, llama.cpp and HF transformers on the same card and files
#           (BENCH_MODELS=qwen-f16 for one model; BENCH_ARGS=--no-peers for orcd alone)
#   latency bench/decode_latency.py twice on the same card and files: programmatic launches on, then off
#           (ORCD_PDL=0); LATENCY_MODELS, default qwen; LATENCY_PDL=1: on only
#   queue1  bench/queue_bench.py: 64 jobs through Valkey + one `orcd worker` vs the engine alone (QUEUE_SUBMIT=
#           one|threads|many|both|all: Client.submit per job in a loop or from a thread each, or
#           submit_many; QUEUE_TOKENS: max tokens; with a py-spy wheel in .whl: the worker and its engine
#           process sampled while busy, $OUT/pyspy-*.raw)
#   queue2  the same jobs twice over on two GPUs: one worker per GPU, one queue (needs 2 GPUs)
#   burst   bench/prefill_burst.py: 64 short prompts prefilled one by one / packed / with first tokens on
#           the GPU, and a 512-token prompt's wall vs GPU time
# Set-up on the dev machine: bench/stage_device.sh (.device with the llama.cpp peer and vocab files, .whl,
# .cubins); carry them (about 65 MB of the 64 MiB limit: for steps without the peer, carry .device
# without its llama_cpp tgz; WHL=DIR names another wheel folder). Output under $OUT.
set -u
source .device/setup.sh || exit 1
WHL=${WHL:-.whl}
mark=/tmp/site2/.done-$(ls $WHL | md5sum | cut -c1-8)  # celery, redis-py, pydantic, ... (worker, tests)
if [ ! -f $mark ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site2 $WHL/*.whl && touch $mark
fi
export PYTHONPATH=$PWD:/tmp/site2:$PYTHONPATH PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 ORCD_CUBIN_DIR=$PWD/.cubins
export PATH=/tmp/site2/bin:$PATH
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
W=/tmp/orcd-bench; mkdir -p $W
nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv,noheader
models() {  # random-weight GGUFs of real shapes with the real vocabularies, written once per machine
  python3 - "$@" <<'PY'
import sys; sys.path.insert(0, "bench")
from pathlib import Path
import gpu_bench
for name in sys.argv[1:]:
    gpu_bench.write_model(Path("/tmp/orcd-bench"), name, Path(".device/vocab"))
PY
}
for step in "$@"; do
  echo "== $step $(date +%T)"
  case $step in
    tests)
      timeout 300 python3 -m pytest -p pytest_timeout -p no:cacheprovider -m cuda -q -k "${PYTEST_K:-not smollm2}" tests/gpu 2>&1 \
        | tee $OUT/pytest.log | tail -8 ;;
    probe)
      models qwen-f16
      timeout 240 python3 bench/llama_probe.py $W/qwen-f16.gguf --out $OUT/llama_probe.json --budget 200 \
        --timeout 40 2>&1 | tee $OUT/llama_probe.log | tail -20 ;;
    bench)
      timeout 560 python3 bench/gpu_bench.py --vocab-dir .device/vocab --workdir $W --out $OUT/bench.jsonl \
        ${BENCH_MODELS:+--models $BENCH_MODELS} --section-timeout 150 ${BENCH_ARGS:-} 2>&1 | tee $OUT/bench.log | tail -30 ;;
    queue1)
      models qwen-f16
      if command -v py-spy >/dev/null; then  # sample the worker (and its engine process) once it is up
        ( for _ in $(seq 600); do pid=$(pgrep -f "worker.cli -v worker" | head -1); [ -n "$pid" ] && break; sleep 0.1; done
          [ -n "$pid" ] && timeout 60 py-spy record --pid $pid --subprocesses --nonblocking --rate 500 --duration 40 \
            --format raw -o $OUT/pyspy-${QUEUE_TOKENS:-256}.raw >/dev/null 2>&1 ) &
      fi
      timeout 300 python3 bench/queue_bench.py --model $W/qwen-f16.gguf --backend cuda --jobs 64 \
        --submit ${QUEUE_SUBMIT:-one} --max-tokens ${QUEUE_TOKENS:-256} --max-context $((${QUEUE_TOKENS:-256} + 256)) 2>&1 | tee $OUT/queue1.log | tail -16 ;;
    latency)
      for pdl in ${LATENCY_PDL:-1 0}; do
        ORCD_PDL=$pdl timeout 240 python3 bench/decode_latency.py --out $OUT/latency.jsonl \
          --models ${LATENCY_MODELS:-qwen} --label pdl=$pdl 2>&1 | tee -a $OUT/latency.log | tail -12
      done ;;
    burst)
      models qwen-f16
      timeout 120 python3 bench/prefill_burst.py --workdir $W --vocab-dir .device/vocab 2>&1 | tee $OUT/burst.log | tail -6 ;;
    queue2)
      models qwen-f16
      timeout 300 python3 bench/queue_bench.py --model $W/qwen-f16.gguf --backend cuda --gpus 0,1 \
        --jobs 128 --submit ${QUEUE_SUBMIT:-one} --max-tokens ${QUEUE_TOKENS:-256} --max-context $((${QUEUE_TOKENS:-256} + 256)) --skip-engine 2>&1 | tee $OUT/queue2.log | tail -16 ;;
  esac
done
