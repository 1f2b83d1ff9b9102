# Two commands set everything up on a fresh machine:
#   make run        create .venv if needed, then run the main job
#   make test       create .venv and install the Debian packages the tests use if needed, run
#                   ruff, validate the compose file and run every test (unit, integration, system)
#   make test-fast  the unit layer alone: no services, no training, no model files (< 60 s)
#   make detectron2 the second segmentation engine (detectron2) built into .venv from the vendored
#                   source (make test does it too; skipped once installed)
PYTHON ?= python3.11
VENV := .venv
export KARYO_DATA ?= $(abspath ../shared/data/bioimlab)
export KARYO_LABELLED_DATA ?= $(abspath ../shared/data/bioimlab-labelled)
# MCIs of validation cells of splits/bioimlab.json (never trained on); give your own with
#   make run RUN_IMAGES="path/to/cell.png path/to/folder" RUN_OUT=somewhere
RUN_IMAGES ?= $(KARYO_LABELLED_DATA)/mci/original_1.json $(KARYO_LABELLED_DATA)/mci/original_2.json \
	$(KARYO_LABELLED_DATA)/mci/original_107a.json
RUN_OUT ?= out/run
# detectron2 has no wheel on the registries for this torch: built from this source tarball
DETECTRON2_SOURCE ?= ../shared/vendor/detectron2-02b5c4e.tar.gz

.PHONY: run test test-fast test-packages detectron2 lint bench eval clean

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

$(VENV)/.detectron2: $(VENV)/.installed
	DETECTRON2_SOURCE=$(DETECTRON2_SOURCE) scripts/install_detectron2.sh $(VENV)
	touch $@

detectron2: $(VENV)/.detectron2

run: $(VENV)/.installed
	$(VENV)/bin/karyo run $(RUN_IMAGES) --out $(RUN_OUT)

test-packages:
	scripts/test_packages.sh

test: $(VENV)/.installed $(VENV)/.detectron2 test-packages
	$(VENV)/bin/ruff check .
	docker-compose config -q && echo "docker-compose.yml: valid"
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -m unit -q $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

eval: $(VENV)/.installed
	$(VENV)/bin/karyo eval classify --data $(KARYO_DATA) --split splits/bioimlab.json --subset val --json out/eval-classify.json
	$(VENV)/bin/karyo eval segment --data $(KARYO_DATA) --split splits/bioimlab.json --subset val --json out/eval-segment.json
	$(VENV)/bin/karyo eval segment --data $(KARYO_DATA) --split splits/bioimlab.json --subset val --tta --bootstrap 200 --json out/eval-segment-tta.json
	$(VENV)/bin/karyo eval karyotype --data $(KARYO_LABELLED_DATA) --json out/eval-karyotype-labelled.json
	$(VENV)/bin/karyo eval karyotype --data $(KARYO_LABELLED_DATA) --segment-tta --json out/eval-karyotype-labelled-tta.json
	$(VENV)/bin/karyo data synth --data $(KARYO_DATA) --split splits/bioimlab.json --subset val --per-cell 2 --seed 1 \
		--touching 0.15 --overlapping 0.05 --out out/synth-val
	$(VENV)/bin/karyo eval karyotype --data out/synth-val --json out/eval-karyotype-synth.json
	$(VENV)/bin/karyo eval karyotype --data out/synth-val --segment-tta --json out/eval-karyotype-synth-tta.json
	# karyotype calls at real crowding (touching 0.15, overlapping 0.12): normal and abnormal cells
	$(VENV)/bin/karyo data synth --data $(KARYO_DATA) --split splits/bioimlab.json --subset val --per-cell 1 --seed 1 \
		--touching 0.15 --overlapping 0.12 --out out/synth-val-normal
	$(VENV)/bin/karyo eval karyotype --data out/synth-val-normal --json out/eval-karyotype-synth-normal.json
	$(VENV)/bin/karyo data synth --data $(KARYO_DATA) --split splits/bioimlab.json --subset val --per-cell 1 --seed 1 \
		--touching 0.15 --overlapping 0.12 --abnormal --out out/synth-val-abnormal
	$(VENV)/bin/karyo eval karyotype --data out/synth-val-abnormal --json out/eval-karyotype-synth-abnormal.json

bench: $(VENV)/.installed
	$(VENV)/bin/karyo bench classify --data $(KARYO_DATA)
	$(VENV)/bin/karyo bench segment --data $(KARYO_DATA)
	$(VENV)/bin/karyo bench karyotype --data $(KARYO_DATA)

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
