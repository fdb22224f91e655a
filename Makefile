# Every target creates .venv on first use and installs only what is missing: a stamp file
# per dependency set is rebuilt only when pyproject.toml changes. Targets call the CLI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
ARTIFACT ?= smollm2-135m-instruct
ARGS ?=

.PHONY: export bot train test lint format bench clean-artifacts help
help:
	@echo "make export   build artifacts/$(ARTIFACT)/ from the embedded default model"
	@echo "make bot      run the Telegram bot (BALABOL_BOT_TOKEN in .env; see README)"
	@echo "make train    fine-tune a LoRA adapter (ARGS=\"--data data/NAME --name NAME\")"
	@echo "make test     run the test suite (includes the slow embedded-model export test)"
	@echo "make lint     ruff check + format check"
	@echo "make bench    benchmarks (ARTIFACT=name)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: its CPU wheel is on local disk; any other spec may pull CUDA.
$(VENV)/.stamp-%: pyproject.toml | $(BIN)/python
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[$*]"
	@touch $@

export: $(VENV)/.stamp-export
	$(BIN)/balabol export --base default --name $(ARTIFACT) --skip-existing $(ARGS)

# Serving needs no torch: the bot, the onnx/gguf backends and the tokenizer only.
$(VENV)/.stamp-botrun: pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[botrun]"
	@touch $@

bot: $(VENV)/.stamp-botrun
	$(BIN)/balabol bot $(ARGS)

# the export stack too: the embedded default base is imported from its GGUF by it
train: $(VENV)/.stamp-train $(VENV)/.stamp-export
	$(BIN)/balabol train $(ARGS)

test: $(VENV)/.stamp-all
	$(BIN)/python -m pytest $(ARGS)

lint: $(VENV)/.stamp-all
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.stamp-all
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean-artifacts:
	rm -rf artifacts

bench: $(VENV)/.stamp-all
	$(BIN)/python -m pytest benchmarks -p no:cacheprovider --artifact $(ARTIFACT) $(ARGS)
