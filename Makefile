# energy-at: the two commands of the README, with all the set-up they need.
#   make sweep   a local sweep on Fashion-MNIST (embedded Ray), ending in a report
#   make test    the test suite (starts a real local Slurm for the cluster tests)
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
APT     := dataset-fashion-mnist chromium
export PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: setup system python sweep train test bench clean

setup: system python

# Debian packages: the embedded dataset, and Chromium for the report's browser test.
system: /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz /usr/bin/chromium
/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz /usr/bin/chromium:
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(APT) >/dev/null \
	  || (apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(APT) >/dev/null)

# pyproject.toml states ranges (energy-at installs like a library); constraints.txt pins the
# versions tested here and is complete, so pip's resolver installs it as a lock file (see its
# header). torch==2.13.0 there is the CPU wheel on this machine; on a GPU cluster install the
# CUDA build of that version into .venv first and it is kept.
python: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(shell command -v $(PY) || echo python3) -m venv $(VENV)
	$(BIN)/pip install -q -r constraints.txt -e '.[test]'
	touch $@

sweep: setup
	$(BIN)/energy-at sweep

train: setup
	$(BIN)/energy-at train

# on 1.5 workers a core: each file on one worker, the Slurm tests on one (tests/conftest.py)
test: setup
	$(BIN)/python -m pytest -q -n auto

# Speed, as ratios against baselines run side by side (benchmarks/RESULTS.md); on a GPU add
#   $(BIN)/python benchmarks/train_throughput.py --gpu
bench: setup
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/telemetry_overhead.py
	$(BIN)/python benchmarks/telemetry_overhead.py precision=bf16 channels_last=true

# The set-up and build/test caches; never runs/ (or Hydra's outputs/, multirun/): the results.
clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find . -path ./runs -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
