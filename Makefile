# Two entry points for a fresh machine with only python3 and make:
#   make run   - set up .venv if missing, then run the main job
#   make test  - set up .venv if missing, then run the full test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := build/demo

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Until the update server lands, the main job is a short demo of the image and flash tooling.
run: $(STAMP)
	mkdir -p $(DEMO)
	$(VENV)/bin/ovota image build --version 3.3.006-demo --size 1048576 $(DEMO)/ovms3.bin
	$(VENV)/bin/ovota image info $(DEMO)/ovms3.bin
	$(VENV)/bin/ovota parttable build --flash-size 16MB ../shared/vectors/partition_tables/partitions.csv $(DEMO)/partitions.bin
	$(VENV)/bin/ovota parttable show $(DEMO)/partitions.bin
	$(VENV)/bin/ovota otadata init $(DEMO)/otadata.bin
	$(VENV)/bin/ovota otadata switch $(DEMO)/otadata.bin ota_1
	$(VENV)/bin/ovota otadata show $(DEMO)/otadata.bin

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/image_verify.py
	$(PY) bench/flash_update.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
