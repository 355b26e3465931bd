# kind: the live system on two real clusters. Included by the main Makefile (PY, venv, k8s-bin).
#
#   make kind        dc-west + dc-east kind clusters (kubeconfigs in .local/kind-*.kubeconfig),
#                    from a node image built here; starts the project's Docker engine
#   make kind-down   delete both clusters, stop the project's Docker engine
#   make image       the project image (Dockerfile) in the project's Docker engine
#   make demo-kind   the system deployed onto the clusters, the case study driven live

.PHONY: docker docker-down kind-bin kind-image image kind kind-down kind-status demo-kind

kind-bin: ## kubelet, kubeadm, kube-proxy, controller-manager, scheduler, coredns, crictl, kind from Go modules (first time ~4 min on 2 idle cores, ~10 on a busy machine; cached)
	@hack/build-k8s.sh --node >/dev/null

docker: ## start the project's own Docker engine (Debian's docker.io, installed if missing; data outside the repo)
	@hack/kind/docker.sh start >/dev/null

docker-down: ## stop the project's Docker engine and every container it runs
	@hack/kind/docker.sh stop

kind-image: k8s-bin kind-bin docker ## the kind node image (Debian base by debootstrap, Kubernetes from Go modules; first time ~5 min; cached)
	@hack/kind/images.sh node >/dev/null

image: venv docker ## the project image from the Dockerfile, on a Python base built from Debian's packages
	@$(PY) -m prfaas_dev.image

kind: venv kind-image ## two kind clusters: dc-west (PD cluster) and dc-east (PrefillPool); kubeconfigs in .local/
	@$(PY) -m prfaas_dev.kind up

kind-status: venv ## are the kind clusters up?
	@$(PY) -m prfaas_dev.kind status

kind-down: ## delete the kind clusters and stop the project's Docker engine (nothing is left running)
	@if [ -x "$(PY)" ]; then $(PY) -m prfaas_dev.kind down --stop-docker; else hack/kind/docker.sh stop; fi
