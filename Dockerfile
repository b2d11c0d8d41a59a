# syntax=docker/dockerfile:1
# miLLM: the web UI built with Node, then a CUDA runtime image that installs the locked Python packages.
#
#   docker build -t millm .                                   # NVIDIA GPU (CUDA 12.8 wheels of PyTorch)
#   docker build -t millm:cpu --build-arg BASE_IMAGE=ubuntu:22.04 --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .
#   docker compose up            (docker-compose.yml: GPU)   docker compose -f docker-compose.cpu.yml up   (CPU)
#
# Configuration is by MILLM_* environment variables (README: Settings). Data (profiles database, job state) lives
# in /data and the Hugging Face cache in /cache: mount volumes there. The server listens on 0.0.0.0:8000; set
# MILLM_API_KEY when the port is reachable from other machines.

ARG BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu22.04
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128

# ---------------------------------------------------------------------------- the web UI
FROM node:24-bookworm-slim AS ui
WORKDIR /build
COPY frontend/package.json frontend/package-lock.json frontend/
RUN cd frontend && npm ci --no-audit --no-fund
COPY frontend/ frontend/
# Vite writes to ../src/millm/webui/dist
RUN mkdir -p src/millm/webui && cd frontend && npm run build

# ---------------------------------------------------------------------------- the server
FROM ${BASE_IMAGE} AS runtime
ARG TORCH_INDEX
ARG DEBIAN_FRONTEND=noninteractive

# Python 3.11 (the version requirements.lock was resolved for) from the deadsnakes PPA
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gnupg ca-certificates \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && apt-get purge -y software-properties-common && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/millm \
    PATH=/opt/millm/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python3.11 -m venv /opt/millm
WORKDIR /app

# PyTorch for this image's accelerator first (the lock pins the version; the +cu128 / +cpu build satisfies it),
# then every other package exactly as locked, then miLLM itself without dependencies.
COPY requirements.lock ./
RUN pip install --index-url "${TORCH_INDEX}" "$(grep '^torch==' requirements.lock)" \
 && pip install -r requirements.lock
COPY pyproject.toml README.md ./
COPY src/ src/
COPY --from=ui /build/src/millm/webui/dist/ src/millm/webui/dist/
RUN pip install --no-deps . && rm -rf /app/src

# An unprivileged user owns the data and cache volumes.
RUN useradd --create-home --uid 1000 --user-group millm \
 && mkdir -p /data /cache/huggingface \
 && chown -R millm:millm /data /cache
USER millm

ENV MILLM_HOST=0.0.0.0 \
    MILLM_PORT=8000 \
    MILLM_DATA_DIR=/data \
    HF_HOME=/cache/huggingface
VOLUME ["/data", "/cache"]
EXPOSE 8000

# /health is 200 once a model is loaded and serving (503 while loading or draining)
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"]

# SIGTERM drains running requests (MILLM_SHUTDOWN_TIMEOUT) before exit: give `docker stop -t` at least as long.
STOPSIGNAL SIGTERM
ENTRYPOINT ["millm", "serve"]
