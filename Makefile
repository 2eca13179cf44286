PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The demo reads LUDB from $SSL_ECG_DATA; next to a checkout that has ../shared/data/ludb, that folder is used,
# and without either it downloads LUDB from PhysioNet.
SSL_ECG_DATA ?= $(if $(wildcard ../shared/data/ludb),$(abspath ../shared/data),)
export SSL_ECG_DATA

.PHONY: demo test lint clean venv results

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/ssl-ecg demo experiments/demo.yaml

# The results grid (hours on 2 CPUs; resumable): writes RESULTS.md from experiments/results/*.yaml.
results: $(STAMP)
	$(BIN)/ssl-ecg report $(REPORT_ARGS)

test: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache build *.egg-info
