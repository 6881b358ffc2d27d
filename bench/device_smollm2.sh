#!/usr/bin/env bash
# GPU-machine runs on the real SmolLM2 file, which is larger than one run may carry: three calls while
# the machine stays warm (see docs/benchmarks.md for the figures they produced).
#   step A (carry .smolA .whl):   bash bench/device_smollm2.sh A   # first half + the queue's wheels
#   step B (carry .smol .devlite): bash bench/device_smollm2.sh B   # second half; cuda tests, orcd run, queue bench
#   step C (carry .device):        bash bench/device_smollm2.sh C   # llama.cpp and the engine on the same file
set -u
OUT=${OUT:-/tmp/out}; W=/tmp/orcd-bench; mkdir -p $W "$OUT"
SMOL=$W/smollm2.gguf
case "$1" in
A)
  cp .smolA/smol.part1 /tmp/smol.part1
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site2 .whl/*.whl && touch /tmp/site2/.done
  ls -la /tmp/smol.part1; exit 0 ;;
B) source .devlite/setup.sh || exit 1
   cat /tmp/smol.part1 .smol/smol.part2 > $SMOL && sha256sum $SMOL ;;
C) source .device/setup.sh || exit 1 ;;
esac
export PYTHONPATH=$PWD:/tmp/site2:$PYTHONPATH PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 ORCD_SMOLLM2_GGUF=$SMOL
export ORCD_CUBIN_DIR=$PWD/$( [ "$1" = B ] && echo .devlite || echo .device )/cubins
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "$1" = B ]; then
  echo "== pytest -m cuda (all GPU tests, SmolLM2 teacher-forced included)"
  timeout 240 python3 -m pytest -p pytest_timeout -m cuda -q -rs tests/gpu 2>&1 | tee $OUT/pytest.log | tail -8
  echo "== orcd run, greedy, numpy vs cuda backend"
  for b in numpy cuda; do
    timeout 120 python3 -m worker.cli run --model $SMOL --backend $b --temperature 0 --max-tokens 24 \
      "The capital of France is" > $OUT/run-$b.txt 2> $OUT/run-$b.err; echo "$b rc=$?: $(cat $OUT/run-$b.txt)"
    tail -1 $OUT/run-$b.err
  done
  cmp -s $OUT/run-numpy.txt $OUT/run-cuda.txt && echo "orcd run: numpy and cuda texts identical"
  echo "== queue: 64 concurrent jobs (SmolLM2, cuda worker) vs the engine alone"
  timeout 200 python3 bench/queue_bench.py --model $SMOL --backend cuda --jobs 64 --max-tokens 128 \
    --max-context 512 2>&1 | tee $OUT/queue.log | tail -12
fi
if [ "$1" = C ]; then
  for m in smollm2; do
    timeout 100 python3 -X faulthandler bench/gpu_bench.py --section llama.cpp --models $m --workdir $W \
      --out $OUT/bench.jsonl > $OUT/llama-$m.log 2>&1; echo "llama.cpp $m rc=$?"; tail -2 $OUT/llama-$m.log
    timeout 150 python3 bench/gpu_bench.py --section orcd --models $m --workdir $W --out $OUT/bench.jsonl \
      > $OUT/orcd-$m.log 2>&1; echo "orcd $m rc=$?"
  done
  grep -h '"section": "\(decode\|prefill\)"' $OUT/bench.jsonl | cut -c1-160
fi
