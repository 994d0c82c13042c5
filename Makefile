# Two commands do all set-up on a fresh machine:
#   make cosa   install everything, then train CoSA on the bundled MF-Seg data
#   make test   install everything, then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# 1 where nvcc exists: install.sh then builds the CUDA op too, and the tests check it is there.
FORCE_CUDA ?= $(if $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null),1,0)
export FORCE_CUDA

.PHONY: install cosa cosa-ema cosa-no-ema paper baseline supervised auxsegnet test docs dist-check bench lint gpu-check

install:
	bash scripts/install.sh

cosa: install
	$(PY) examples/cosa/train.py --config examples/cosa/configs/default.yaml

cosa-ema: install
	$(PY) examples/cosa/train.py --config examples/cosa/configs/cosa_ema.yaml

cosa-no-ema: install
	$(PY) examples/cosa/train.py --config examples/cosa/configs/no_ema.yaml

paper: install
	$(PY) examples/cosa/train.py --config examples/cosa/configs/paper.yaml

baseline: install
	$(PY) examples/cosa/train.py --config examples/cosa/configs/baseline.yaml

supervised: install
	$(PY) examples/cosa/train.py --config examples/cosa/configs/supervised.yaml

auxsegnet: install
	$(PY) examples/auxsegnet/train.py --config examples/auxsegnet/configs/default.yaml

test: install
	$(PY) -m pytest -q -p no:cacheprovider

# The API reference built from the docstrings (sources in docs/api): HTML in
# docs/api/_build/html. -W --keep-going: every warning is listed, then fails the build;
# -n: every reference to the library's own objects must resolve; -E: a fresh read each
# time, so a second run reports the same warnings. Offline (no intersphinx).
docs: install
	$(PY) -m sphinx -W --keep-going -n -E -q -b html -d docs/api/_build/doctrees docs/api docs/api/_build/html

# The release check: sdist -> wheel compiled from it -> a venv holding only torch ->
# import, kernel and fallback from outside the repository (scripts/check_dist.py).
dist-check: install
	$(PY) scripts/check_dist.py

bench: install
	$(PY) -m pytest benchmarks -p no:cacheprovider --benchmark-enable --benchmark-only

lint: install
	$(VENV)/bin/ruff check wsss_blocks examples tests benchmarks

# On a machine with a CUDA GPU: the CUDA tests, a short CUDA + AMP run, the CSC benchmark.
gpu-check:
	bash scripts/gpu_check.sh
