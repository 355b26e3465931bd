# Kubernetes control plane for integration tests and the demo; included by the main Makefile,
# which defines PY (.venv/bin/python) and the venv target.
#
#   make k8s-bin       build kube-apiserver, kubectl, etcd, helm from Go modules (once; cached by
#                      version under ${PRFAAS_CACHE:-${XDG_CACHE_HOME:-~/.cache}/prfaas-operator})
#   make cluster       start etcd + kube-apiserver on loopback, admin kubeconfig in .local/kubeconfig
#   make cluster-down  stop it (nothing is left running; data and certs are removed)

K8S_BUILD := hack/build-k8s.sh
# Lazy (=): the directory is only computed by the recipes that need it.
K8S_BIN_DIR = $(shell $(K8S_BUILD) --print-dir)
CLUSTER_STATE ?= .local/cluster
CLUSTER_KUBECONFIG ?= .local/kubeconfig

.PHONY: k8s-bin cluster cluster-down cluster-status

k8s-bin: ## build kube-apiserver, etcd, kubectl, helm from Go modules (first time ~7 min on 2 idle cores, 3-6× that on a busy one; cached)
	@$(K8S_BUILD) >/dev/null

cluster: k8s-bin venv ## start a local control plane (etcd + kube-apiserver); kubeconfig in .local/kubeconfig
	@$(PY) -m prfaas_dev.cluster up --bin-dir "$(K8S_BIN_DIR)" \
		--state-dir $(CLUSTER_STATE) --kubeconfig $(CLUSTER_KUBECONFIG)

cluster-down: ## stop the local control plane started by `make cluster`
	@if [ -x "$(PY)" ]; then \
		$(PY) -m prfaas_dev.cluster down --state-dir $(CLUSTER_STATE) --kubeconfig $(CLUSTER_KUBECONFIG); \
	else echo "no venv, so no cluster to stop"; fi

cluster-status: ## is the local control plane running?
	@$(PY) -m prfaas_dev.cluster status --state-dir $(CLUSTER_STATE)
