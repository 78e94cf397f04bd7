# Two entry points for a fresh machine with only python3 and make:
#   make run   - set up .venv if missing, then run the main job
#   make test  - set up .venv if missing, then run the full test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN := build/run

.PHONY: run cluster test lint bench clean system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job: the update server on an embedded repository (a folder + SQLite), where a channel is empty seeded
# with a sample build, for both products: v3.3-5 (the v3-35 layout) and v3.3 (the older layouts' 4 MB slots, whose
# modules take 3.3.006 before `ota partitions upgrade`). A channel that serves a build (an operator's) is kept, so
# re-running `make run` changes nothing; seeds are reproducible (fixed build time).
HOST ?= 127.0.0.1
PORT ?= 8080
run: $(STAMP)
	mkdir -p $(RUN)
	for seed in main:3.3.006 eap:3.3.006-52-g1b2c3d4 edge:3.3.006-172-g362f87425; do \
	  tag=$${seed%%:*}; version=$${seed#*:}; \
	  SOURCE_DATE_EPOCH=1784000000 $(VENV)/bin/ovota image build --version $$version --size 2100352 $(RUN)/$$tag.bin >/dev/null || exit 1; \
	  for product in v3.3-5 v3.3; do \
	    $(VENV)/bin/ovota release publish $(RUN)/$$tag.bin --repo $(RUN)/repo --tag $$tag --product $$product --if-empty || exit 1; \
	  done; \
	done
	$(VENV)/bin/ovota server --repo $(RUN)/repo --host $(HOST) --port $(PORT)

# The same on PostgreSQL + SeaweedFS (S3), two servers behind nginx on $(PORT): see scripts/cluster.sh.
cluster: $(STAMP) system-deps
	HOST=$(HOST) PORT=$(PORT) bash scripts/cluster.sh

# Debian packages the tests use: chromium for the browser tests (Playwright cannot download its own
# browser here), nginx and wrk for the smoke run of bench/serve.sh, valgrind for bench/ver_cost.py, PostgreSQL
# for the cluster tests and `make cluster`, dosfstools and mtools to check the FAT a module's /store holds.
# Installed when running as root.
DEBS := chromium nginx-light wrk curl bc util-linux postgresql valgrind dosfstools mtools
system-deps:
	@missing=""; for cmd in /usr/bin/chromium /usr/sbin/nginx /usr/bin/wrk /usr/bin/curl /usr/bin/bc /usr/bin/taskset /usr/bin/valgrind /usr/sbin/fsck.fat /usr/bin/mtype; do \
	  test -x $$cmd || missing=1; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=1; \
	test -z "$$missing" || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq $(DEBS) >/dev/null; } \
	  || echo "some of $(DEBS) are not installed: the tests that need them will be skipped"

test: $(STAMP) system-deps
	$(PY) -m pytest -n 2 -q --durations=25

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/image_verify.py
	$(PY) bench/flash_update.py
	$(PY) bench/fleet.py
	$(PY) bench/delta.py
	bash bench/serve.sh
	$(PY) bench/ver_cost.py
	$(PY) bench/soak.py
	$(PY) bench/fleet_page.py
	$(PY) bench/pacing.py
	bash bench/cluster_starts.sh
	$(PY) bench/big_group.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
