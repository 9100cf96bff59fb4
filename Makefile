# rfs_jax make targets. Everything runs inside .venv (created by `make install`).
PY      ?= .venv/bin/python
PIP     ?= .venv/bin/pip
RFS     ?= .venv/bin/rfs
TASK    ?= grasp
PRESET  ?= cpu
NUM     ?= 400
RUNS    ?= runs

.PHONY: install install-gpu test test-slow lint format run bench demos base steer eval clean

.venv/.installed: pyproject.toml
	test -d .venv || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $@

install: .venv/.installed

install-gpu: install
	$(PIP) install -q -U "jax[cuda12]"

test: install
	$(PY) -m pytest -q -x

test-slow: install
	$(PY) -m pytest -q -m slow

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: install
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

run: install
	$(RFS) pipeline --task $(TASK) --preset $(PRESET)

bench: install
	$(RFS) bench --task $(TASK) --num-envs 256 --json $(RUNS)/bench/$(TASK)_256.json
	$(RFS) bench --task $(TASK) --num-envs 1024 --json $(RUNS)/bench/$(TASK)_1024.json

demos: install
	$(RFS) demos --task $(TASK) --num $(NUM) --out $(RUNS)/$(TASK)/demos.hdf5

base: install
	$(RFS) base --task $(TASK) --demos $(RUNS)/$(TASK)/demos.hdf5 --out $(RUNS)/$(TASK)/base

steer: install
	$(RFS) steer --task $(TASK) --base $(RUNS)/$(TASK)/base --preset $(PRESET)

clean:
	rm -rf $(RUNS) .pytest_cache .ruff_cache
