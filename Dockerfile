# One image for workers and the gateway: CUDA runtime + nvcc (PyCUDA compiles kernels at start-up).
FROM nvidia/cuda:12.6.3-devel-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/orcd
ENV PATH=/opt/orcd/bin:$PATH PYTHONUNBUFFERED=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker worker
COPY gpu gpu
COPY tokenizer tokenizer
COPY gguf_loader gguf_loader
RUN pip install --no-cache-dir '.[gpu,serve]'
CMD ["orcd", "--help"]
