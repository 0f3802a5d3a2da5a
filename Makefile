# telesurg — `make demo` and `make test` work from a fresh clone: they create .venv and install
# everything they need (Python packages into .venv, Debian libraries via apt-get when root).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSSTAMP := $(VENV)/.system-deps
export MUJOCO_GL ?= osmesa
export PYOPENGL_PLATFORM ?= osmesa
ifeq ($(DISPLAY)$(WAYLAND_DISPLAY),)
export SDL_VIDEODRIVER ?= dummy
endif
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
	@mkdir -p out/bench
	$(BIN)/python bench/link_latency.py --seconds 10 --json out/bench/link_latency.json
	$(BIN)/python bench/servo_loop.py --json out/bench/servo_loop.json
	$(BIN)/python bench/robot_sim.py --json out/bench/robot_sim.json
	$(BIN)/python -m telesurg.netem.bench --json out/bench/netem.json
	$(BIN)/python bench/video_pipeline.py --stereo --json out/bench/video_720p60.json
	$(BIN)/python bench/wakeup_latency.py --json out/bench/wakeup_latency.json
	$(BIN)/python bench/command_overhead.py --json out/bench/command_overhead.json
	$(BIN)/python bench/multi_console.py --json out/bench/multi_console.json
	$(BIN)/python bench/peers.py --json out/bench/peers.json --plot out/bench/peers.png
	$(BIN)/python bench/igtl_servo.py --json out/bench/igtl_servo.json
	$(BIN)/python bench/kinematic_driver.py --json out/bench/kinematic_driver.json
	$(BIN)/python bench/haptics.py --png out/bench/haptics.png --json out/bench/haptics.json
	$(BIN)/python bench/latency_benefit.py --png out/bench/latency_benefit.png --json out/bench/latency_benefit.json
	$(BIN)/python bench/observers.py --json out/bench/observers.json --png out/bench/observers.png
	$(BIN)/python bench/observers_blocks.py --json out/bench/observers_blocks.json
	$(BIN)/python bench/observers_blocks.py --placement apart --json out/bench/observers_blocks_apart.json
	$(BIN)/python bench/dashboard_screenshot.py --json out/bench/dashboard.json
	$(BIN)/python bench/dashboard_cost.py --json out/bench/dashboard_cost.json
	$(BIN)/python bench/fuzz_link.py
	$(BIN)/python bench/fuzz_link.py --mode long
	$(BIN)/telesurg simulate --scenarios 10000 --jobs 2 --plot out/bench/sim-hold-reactions.png

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
