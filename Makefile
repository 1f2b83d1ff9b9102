# Two commands set everything up on a fresh machine:
#   make run    create .venv if needed, then run the main job
#   make test   create .venv if needed, start what the tests need, run pytest
PYTHON ?= python3.11
VENV := .venv
export KARYO_DATA ?= $(abspath ../shared/data/bioimlab)
export KARYO_LABELLED_DATA ?= $(abspath ../shared/data/bioimlab-labelled)
# Validation cells of splits/bioimlab.json: never trained on.
RUN_CELLS ?= 1 2 3

.PHONY: run test lint bench eval clean

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/karyo classify --data $(KARYO_DATA) --cases $(RUN_CELLS)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

eval: $(VENV)/.installed
	$(VENV)/bin/karyo eval classify --data $(KARYO_DATA) --split splits/bioimlab.json --subset val --json out/eval-classify.json

bench: $(VENV)/.installed
	$(VENV)/bin/karyo bench classify --data $(KARYO_DATA)

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
