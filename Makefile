# `make demo` and `make test` set everything up themselves on a fresh Debian machine (Python 3.11).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-slow lint bench clean

demo: $(STAMP)
	$(VENV)/bin/initbench list inits


test: $(STAMP) $(FMNIST)
	$(VENV)/bin/ruff check initbench tests
	$(PY) -m pytest -q

test-slow: $(STAMP) $(FMNIST)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(VENV)/bin/initbench bench

# constraints.txt pins every package to the versions this project is tested with (torch 2.14.1 and
# torchvision 0.29.1 come from this machine's local wheel store); pyproject.toml keeps ranges for users.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

# Real Fashion-MNIST for the tests, from Debian (no download at run time).
$(FMNIST):
	$(SUDO) apt-get install -y -q dataset-fashion-mnist || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist)

clean:
	rm -rf $(VENV) build *.egg-info
