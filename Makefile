# Two commands on a fresh machine: `make quickstart` and `make test`. Each sets up what it needs.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rlvla-installed
export MUJOCO_GL ?= egl
# llvmpipe (software GL) spawns one thread per core per context; one per process renders faster here.
export LP_NUM_THREADS ?= 1
# Packages install without byte-compiling (pip compiles every module, used or not: ~60 s of the set-up); Python
# compiles what a command imports, once, into .venv/pycache. Where PYTHONDONTWRITEBYTECODE is set it would compile
# torch again in every process, so the commands run here write their byte code.
unexport PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX ?= $(CURDIR)/$(VENV)/pycache

.PHONY: quickstart test test-slow bench bench-sft sysdeps clean-venv

$(STAMP): pyproject.toml
	@bash scripts/sysdeps.sh
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: a newer one would pull gigabytes of CUDA wheels.
	$(BIN)/python -m pip install -q --no-compile torch==2.13.0
	$(BIN)/python -m pip install -q --no-compile -e '.[dev]'
	@touch $(STAMP)

sysdeps:
	@bash scripts/sysdeps.sh

# The grounded quickstart: tasks where the policy has to look and to read (the plain `rlvla quickstart` runs the
# earlier two-task set).
quickstart: $(STAMP)
	$(BIN)/rlvla quickstart --tasks grounded/quickstart

test: $(STAMP)
	@bash scripts/sysdeps.sh --optional
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Env, inference, RL rollout vs env-only, PPO vs stable-baselines3 (a benchmark-only dependency), and offline RL
# memory when streaming a dataset 10x the quickstart's (mixed-quality data collected first; ~35 min in all).
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/rlvla bench env --json
	$(BIN)/rlvla bench inference --json
	$(BIN)/rlvla bench rollout --json
	$(BIN)/rlvla bench sb3 --json
	$(BIN)/rlvla collect --tasks vla5 --episodes 40 --failure-prob 0.5 --noise 0.1 --out runs/bench/mixed --quiet
	$(BIN)/rlvla bench offline --source runs/bench/mixed --copies 5 --out runs/bench/offline --json

# SFT of every head from 20 demos per task under a 5-minute budget each, then evaluation (~40 minutes).
bench-sft: $(STAMP)
	$(BIN)/rlvla bench sft --json

clean-venv:
	rm -rf $(VENV)
