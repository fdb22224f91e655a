# The Telegram bot for a CPU VPS: the onnx/gguf backends and the tokenizer, no torch.
# Artifacts are built elsewhere (`make export`) and mounted read-only at /artifacts.
#   docker compose up -d --build        (see README, "Telegram bot")

# --- build: wheels, including llama-cpp-python compiled from source (~12 min on 2 cores) ---
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
# every stage's light CLI module: `balabol` loads all registered commands to build its help
COPY balabol balabol
COPY runtime runtime
COPY export export
COPY training training
COPY bot bot
COPY api api
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[botrun]"

# --- run: slim, non-root -----------------------------------------------------------------
FROM python:3.11-slim
# libgomp: OpenMP, used by llama.cpp and onnxruntime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 balabol \
    && mkdir /data && chown balabol:balabol /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "balabol[botrun]" \
    && rm -rf /wheels
USER balabol
WORKDIR /home/balabol
ENV PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    BALABOL_ARTIFACTS=/artifacts \
    BALABOL_DB=/data/bot.sqlite3
VOLUME ["/data"]
# webhook mode listens here (BALABOL_MODE=webhook); polling needs no port
EXPOSE 8080
CMD ["balabol", "bot"]
