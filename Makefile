# Two entry points: `make demo` (train on MNIST and write a run folder) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs dist clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e ".[dev,metrics,viz]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/genvae train --epochs 3 --out runs/demo --resume
	@echo "run folder: runs/demo (samples.png, reconstructions.png, loss.png, metrics.json)"
	@echo "next: source .venv/bin/activate, then genvae info runs/demo"

# One pytest worker per core (pytest-xdist), tests handed out one by one. `make test` leaves out the
# tests marked slow (example scripts, inductor, DDP, the wheel: minutes); `make test-all` runs them too.
test: $(STAMP)
	$(PY) -m pytest -q -n auto -m "not slow"

.PHONY: test-all
test-all: $(STAMP)
	$(PY) -m pytest -q -n auto

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples benchmarks

docs: $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

dist: $(STAMP)
	$(PY) -m pip install --quiet -e ".[release]"
	rm -rf dist
	$(PY) -m build --no-isolation --outdir dist .
	$(VENV)/bin/twine check --strict dist/*

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info

# Mutation testing of the mathematical core (slow, not in CI): one mutant at a time, each against
# the tests mapped to its module; writes benchmarks/results/mutation.json.
.PHONY: mutate
mutate: $(STAMP)
	$(PY) benchmarks/mutate.py --sample 40 --seed 0 --all terms.py --all schedules.py --all objectives.py --all kl.py
