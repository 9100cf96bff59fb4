# rfs_jax make targets. Everything runs inside .venv (created by `make install`).
PY      ?= .venv/bin/python
PIP     ?= .venv/bin/pip
RFS     ?= .venv/bin/rfs
TASK    ?= grasp
PRESET  ?= cpu
NUM     ?= 400
RUNS    ?= runs
ARGS    ?=
# make test's pytest-xdist workers: two, one per core of the CI machine, each taking whole test
# modules (--dist loadfile keeps a module's shared fixtures in one process). PYTEST_WORKERS=0: one
# process.
PYTEST_WORKERS ?= 2
# RL budget of `make run`: sized so that the whole pipeline fits in about 20 minutes on 2 CPU cores.
RUN_STEPS ?= 200000

.PHONY: install install-gpu test test-slow lint format run bench bench-tasks demos base steer steer-cluster clean

.venv/.installed: pyproject.toml
	test -d .venv || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev,export]'
	touch $@

install: .venv/.installed

# jax's CUDA plugin at the jax version already installed (nothing else changes).
install-gpu: install
	$(PIP) install -q "jax[cuda12]==$$($(PY) -c 'import jax; print(jax.__version__)')"

test: install
	$(PY) -m pytest -q -x $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile)

# pytest exits 5 when no test is marked slow (none is today: every learning test fits in make test).
test-slow: install
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: install
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

run: install
	$(RFS) pipeline --task $(TASK) --preset $(PRESET) --total-env-steps $(RUN_STEPS) $(ARGS)

bench: install
	$(RFS) bench --task $(TASK) --num-envs 256 --json $(RUNS)/bench/$(TASK)_256.json
	$(RFS) bench --task $(TASK) --num-envs 1024 --json $(RUNS)/bench/$(TASK)_1024.json

# Env-only rates of every task in one process, relative to grasp (issue 6's table).
bench-tasks: install
	$(RFS) bench-tasks --num-envs 1024 --json $(RUNS)/bench/tasks_1024.json

demos: install
	$(RFS) demos --task $(TASK) --num $(NUM) --out $(RUNS)/$(TASK)/demos.hdf5

base: install
	$(RFS) base --task $(TASK) --demos $(RUNS)/$(TASK)/demos.hdf5 --out $(RUNS)/$(TASK)/base

# Extra flags through ARGS, e.g. make steer TASK=grasp PRESET=gpu ARGS="--seeds 4"
steer: install
	$(RFS) steer --task $(TASK) --base $(RUNS)/$(TASK)/base --preset $(PRESET) $(ARGS)

# Multi-host: the same command on every host, with process 0's address, e.g. on two hosts
#   make steer-cluster PRESET=gpu COORDINATOR=host0:12345 NUM_PROCESSES=2 PROCESS_ID=0  (host0)
#   make steer-cluster PRESET=gpu COORDINATOR=host0:12345 NUM_PROCESSES=2 PROCESS_ID=1  (host1)
# Under SLURM / Open MPI leave those unset (srun make steer-cluster ...): JAX reads the job.
# $(RUNS) must be on a filesystem every host sees.
steer-cluster: install
	$(if $(COORDINATOR),JAX_COORDINATOR_ADDRESS=$(COORDINATOR)) \
	$(if $(NUM_PROCESSES),JAX_NUM_PROCESSES=$(NUM_PROCESSES)) \
	$(if $(PROCESS_ID),JAX_PROCESS_ID=$(PROCESS_ID)) \
	$(RFS) steer --distributed --task $(TASK) --base $(RUNS)/$(TASK)/base --preset $(PRESET) $(ARGS)

clean:
	rm -rf $(RUNS) .pytest_cache .ruff_cache
