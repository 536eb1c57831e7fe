# `make demo` and `make test` set everything up themselves on a fresh Debian machine (Python 3.11).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
CHROMIUM := /usr/bin/chromium
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-slow docs bench bench-executors results papers gpu-check clean

# The main job on the offline default: the quickstart study (digits, both models, 10 schemes,
# 10 seeds) trained from scratch into demo/, then ranked; prints where the report is.
demo: $(STAMP)
	rm -rf demo/quickstart
	$(VENV)/bin/initbench sweep experiments/quickstart.yaml --out demo/quickstart

test: $(STAMP) $(FMNIST) $(CHROMIUM)
	$(VENV)/bin/ruff check initbench tests scripts
	$(PY) -m pytest -q

# The checks marked slow (a faster test covers the same path): e.g. 20 random kills of a sweep.
test-slow: $(STAMP) $(FMNIST) $(CHROMIUM)
	$(PY) -m pytest -q -m slow

# The documentation site, built strictly (a broken link or reference fails) into site/.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

# Figures, printed: how fast the command answers (fresh processes), then training throughput against plain PyTorch.
bench: $(STAMP) $(FMNIST)
	$(PY) scripts/cli_times.py
	$(VENV)/bin/initbench bench

# The quickstart trained by the sequential executor and by a local Ray, interleaved (about 10 minutes here).
bench-executors: $(STAMP)
	$(PY) scripts/executors.py --repeats 2

# Regenerate the example study committed under results/ (only ever written by the tool).
results: $(STAMP)
	rm -rf results/quickstart
	$(VENV)/bin/initbench sweep experiments/quickstart.yaml --out results/quickstart --no-progress

# constraints.txt pins every package to the versions this project is tested with (torch 2.14.1 and
# torchvision 0.29.1 come from this machine's local wheel store); pyproject.toml keeps ranges for users.
# The packages' bytecode is compiled by compileall on every core, not by pip one file after another (the install takes
# about 70 s instead of 87 s here); it must be there, as this machine sets PYTHONDONTWRITEBYTECODE (without it every
# process compiles torch and Lightning again). A file it cannot compile (a package's own test data) is left as it is.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --disable-pip-version-check --no-compile -c constraints.txt -e '.[dev]'
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $@

# Real Fashion-MNIST for the tests, from Debian (no download at run time).
$(FMNIST):
	$(SUDO) apt-get install -y -q dataset-fashion-mnist || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist)

# A real browser for the HTML report's test, from Debian.
$(CHROMIUM):
	$(SUDO) apt-get install -y -q chromium || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

# The gallery of the init papers (experiments/papers), trained from scratch into results/papers; about 7 minutes.
papers: $(STAMP)
	sh scripts/papers.sh

# On a machine with CUDA: the GPU path checked and measured from the source tree with the machine's own python3 (no
# venv, no installs), under 8 minutes; prints one Markdown table for the README. The suite runs its CPU form
# (python3 scripts/gpu_check.py --cpu).
gpu-check:
	python3 scripts/gpu_check.py

clean:
	rm -rf $(VENV) build site *.egg-info
