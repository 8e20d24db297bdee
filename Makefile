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

# torch is pinned in pyproject.toml: the CPU wheel here, the user's CUDA build on a GPU cluster.
python: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(shell command -v $(PY) || echo python3) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0 torchvision==0.28.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

sweep: setup
	$(BIN)/energy-at sweep

train: setup
	$(BIN)/energy-at train

test: setup
	$(BIN)/python -m pytest -q

# Speed, as ratios against baselines run side by side (benchmarks/RESULTS.md); on a GPU add
#   $(BIN)/python benchmarks/train_throughput.py --gpu
bench: setup
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/telemetry_overhead.py
	$(BIN)/python benchmarks/telemetry_overhead.py precision=bf16 channels_last=true

clean:
	rm -rf $(VENV) runs
