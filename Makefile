# telesurg — `make demo` and `make test` work from a fresh clone: they create .venv and install
# everything they need (Python packages into .venv, Debian libraries via apt-get when root).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSSTAMP := $(VENV)/.system-deps
export MUJOCO_GL ?= osmesa
export PYOPENGL_PLATFORM ?= osmesa
export SDL_VIDEODRIVER ?= dummy
export SDL_AUDIODRIVER ?= dummy

.PHONY: all demo test bench lint system-deps venv clean

all: test

$(SYSSTAMP):
	@mkdir -p $(VENV)
	@bash scripts/system-deps.sh
	@touch $@

system-deps: $(SYSSTAMP)

$(STAMP): pyproject.toml $(SYSSTAMP)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/telesurg demo

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python bench/link_latency.py --seconds 10
	@for b in bench/servo_loop.py bench/video_pipeline.py; do \
	  if [ -f $$b ]; then $(BIN)/python $$b; fi; done

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
