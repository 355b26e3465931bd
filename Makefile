# prfaas-operator — everything a fresh machine needs goes through these targets.
SHELL := bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml devtools/pyproject.toml | sha1sum | cut -c1-12)
OUT := .local

-include hack/k8s.mk
-include hack/kind.mk
-include hack/flux.mk

.PHONY: help venv deps kind-deps lint unit test demo bench bench-planner bench-fleet bench-fleet-gain bench-sim bench-routing bench-reconcile bench-operator-scale bench-overhead bench-router-path bench-http-front bench-goodput peers crds lock clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# The package and, next to it, the dev tooling (devtools/: prfaas_dev, `prfaas demo`), both editable.
$(STAMP): pyproject.toml devtools/pyproject.toml
	@echo "==> setting up $(VENV) (first time: ~1-2 min)"
	@$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: install python3-venv"; exit 1; }
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]' -e ./devtools
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP) ## create .venv with the package, the dev tooling (devtools/) and dev tools

deps: ## system packages the integration tests and the demo use (Debian's prometheus; git for the GitOps tests)
	@missing=; for p in prometheus git; do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "==> installing Debian's$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

kind-deps: ## system packages the kind tests use (Debian's docker.io, debootstrap, jq, iptables); not the demo's
	@hack/kind/docker.sh install

lint: venv ## ruff, mypy --strict, import contracts (model/ stays pure)
	$(VENV)/bin/ruff check operator devtools tests bench
	$(VENV)/bin/ruff format --check operator devtools tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile hack/kind/python/Dockerfile hack/kind/node/Dockerfile

unit: venv ## unit tests only (fast, no processes)
	$(PY) -m pytest tests/unit -q

# The kind tests need the project's Docker engine: `docker.sh run` starts it if it is not running
# and stops it afterwards (also on failure); the tests create and delete the clusters themselves.
test: lint deps kind-deps k8s-bin flux-bin kind-bin peers ## the whole suite: lint, unit and integration tests (incl. two kind clusters)
	@hack/kind/docker.sh run sh -c 'hack/kind/images.sh node >/dev/null && $(PY) -m prfaas_dev.image >/dev/null && $(PY) -m pytest tests -q'

demo: venv deps k8s-bin ## the case study: plan (Table 6, Fig. 5), simulate, then the whole system live (~4 min)
	@mkdir -p $(OUT)
	$(VENV)/bin/prfaas plan --plot $(OUT)/figure5.png
	$(VENV)/bin/prfaas simulate --plot $(OUT)/simulation.png
	$(VENV)/bin/prfaas demo --out $(OUT)/demo $(DEMO_ARGS)

lock: venv ## requirements.lock: the image's runtime dependencies pinned with hashes (after changing them)
	@hack/lock.sh

crds: venv ## regenerate crds/ from the pydantic models in prfaas.api
	$(VENV)/bin/prfaas crds --out crds --reference docs/crd-reference.md

# The Helm chart carries copies of crds/ (Helm installs charts/*/crds/ first), and so does
# manifests/crds/ for `kubectl apply -k manifests/`; tests check all three are byte-identical.
CHART := charts/prfaas-operator
HELM = $(K8S_BIN_DIR)/helm
MANIFESTS_HELM_ARGS := prfaas-operator $(CHART) --namespace prfaas-system --set router.enabled=false
MANIFESTS_HEADER := \# Generated from $(CHART) by `make manifests` (helm template): do not edit.
.PHONY: chart-crds manifests
chart-crds: crds ## copy crds/ into the Helm chart and manifests/crds/
	@mkdir -p $(CHART)/crds manifests/crds
	cp crds/*.yaml $(CHART)/crds/
	cp crds/*.yaml manifests/crds/

manifests: chart-crds k8s-bin ## regenerate manifests/operator/ from the Helm chart (helm template)
	{ echo '$(MANIFESTS_HEADER)'; $(HELM) template $(MANIFESTS_HELM_ARGS) \
	  --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml; } > manifests/operator/rbac.yaml
	{ echo '$(MANIFESTS_HEADER)'; $(HELM) template $(MANIFESTS_HELM_ARGS) \
	  --show-only templates/deployment.yaml --show-only templates/service.yaml \
	  --show-only templates/dashboard.yaml; } > manifests/operator/operator.yaml

bench: bench-planner bench-fleet bench-sim bench-routing bench-reconcile ## all benchmarks

bench-planner: venv ## planner speed on the full case-study grid
	$(PY) bench/planner_grid.py

bench-fleet: venv ## fleet planner speed: 50 PD clusters × 8 PrefillPools
	$(PY) bench/fleet_speed.py

bench-fleet-gain: venv ## joint vs independent fleet plans on asymmetric fleets, and the sample fleet simulated (~3 min)
	$(PY) bench/fleet_gain.py
	$(VENV)/bin/prfaas simulate -f manifests/samples/fleet/ --max-rate --policies joint,independent

bench-sim: venv ## simulator speed: 100,000 case-study requests
	$(PY) bench/sim_speed.py

bench-routing: venv ## per-request routing decision time (4K and 128K prompts)
	$(PY) bench/routing_decide.py

bench-reconcile: venv k8s-bin ## slow-loop cost: 200 PDClusters on a real API server
	$(PY) bench/reconcile_scale.py --count 200

bench-operator-scale: venv k8s-bin ## slow loop at scale: 1000 PDClusters, one operator process, first pass + two 60 s rounds (~5 min)
	$(PY) bench/reconcile_scale.py --count 1000 --rounds 2 --skip-inprocess

bench-overhead: venv peers ## Benchmark A: latency, CPU per request and max req/s added by prfaas router vs sglang-router vs vllm-router (~5 min; BENCH_ARGS="--router-core 1": each router on a core of its own)
	$(PY) bench/router_overhead.py $(BENCH_ARGS)

bench-router-path: venv ## the router's own work per request in-process, no HTTP (µs, ~1 µs noise; ~10 s)
	$(PY) bench/router_path.py $(BENCH_ARGS)

bench-http-front: venv peers ## where the router's CPU per request goes: aiohttp vs a bare httptools server vs a bare P/D proxy vs prfaas router vs the peers (~3 min)
	$(PY) bench/http_front.py $(BENCH_ARGS)

bench-goodput: venv peers ## Benchmark B: case-study goodput (TTFT SLO) of prfaas router vs the peers, naive setup and on our engines (~4 min)
	$(PY) bench/goodput.py

.PHONY: bench-goodput-aiperf
bench-goodput-aiperf: venv peers ## Benchmark B, then the same case study driven by aiperf (third party; real time, exact token counts) (~14 min)
	$(PY) bench/goodput.py --aiperf

peers: ## sglang-router, vllm-router, aiperf in version-keyed venvs outside the repo (first time ~2 min; cached)
	@hack/peers.sh

clean: ## remove the venv and local state (not the cached Kubernetes binaries or Flux)
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache
