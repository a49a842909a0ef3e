# Two commands do all the set-up on a fresh machine:
#   make demo   collect the built-in dataset, train, evaluate, print the score
#   make test   run the test suite
# Both create ./.venv on first use.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast test-precisions demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# Without an NVIDIA GPU, take the CPU build of torch first (pinned here only: where a GPU is
	@# present pip resolves torch from pyproject.toml and gets its default CUDA build).
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		echo "no NVIDIA GPU found: installing the CPU build of torch"; \
		$(PY) -m pip install -q "torch==2.13.0"; \
	fi
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: install
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(PY) -m pytest -q

test-fast: install  # the inner loop: everything but the tests listed as slow in tests/conftest.py (~30 s)
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(PY) -m pytest -q -m "not slow"

# The fast tier once with `precision: auto` resolving to bf16 and once to fp32, whatever this CPU has
# (MTM_CPU_BF16 overrides the detection): a test that depends on the precision fails here on any CPU.
test-precisions: install
	MUJOCO_GL=$${MUJOCO_GL:-egl} MTM_CPU_BF16=native $(PY) -m pytest -q -m "not slow"
	MUJOCO_GL=$${MUJOCO_GL:-egl} MTM_CPU_BF16=emulated $(PY) -m pytest -q -m "not slow"

demo: install
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(VENV)/bin/mtm demo

bench: install
	$(PY) scripts/bench_data.py

clean:
	rm -rf $(VENV) build *.egg-info
