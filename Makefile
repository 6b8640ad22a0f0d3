# The README's commands. Every target that runs something first runs the idempotent set-up step.
VENV ?= .venv
PY := $(VENV)/bin/python
SMTD := $(VENV)/bin/stealth-mtd
PYTEST_ARGS ?=

.PHONY: setup test test-unit demo bench clean lint container-test slurm-test

setup:
	@bash scripts/setup.sh

test: setup  ## import contracts, then all tests: unit, loopback and (as root) the real Mininet network
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup  ## import contracts and the tests that need no root
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -m "not root" $(PYTEST_ARGS)

demo: setup
	$(SMTD) demo

bench: setup
	$(SMTD) bench net
	$(SMTD) bench protocol

clean:  ## what a killed testbed left behind; refuses while a run holds the testbed lock (never `mn -c`: it deletes /tmp/*.log)
	@if [ -x $(SMTD) ]; then $(SMTD) clean; else /usr/bin/python3 -m experiments.clean; fi

lint: setup
	$(VENV)/bin/ruff check .

container-test:  ## the Dockerfile built and `make test` run in it (debootstrap + buildah; slow, not in .ci/run)
	@PYTEST_ARGS='$(PYTEST_ARGS)' bash scripts/container-test.sh

slurm-test: setup  ## as root: a single-node Slurm (slurm-wlm + munge, apt-get if missing) runs slurm-smoke as a 3-task job array, merges it and checks the merge (several minutes; not in .ci/run)
	@bash scripts/slurm-test.sh
