# Flux for the GitOps tests; included by the main Makefile.
#
#   make flux-bin   build Flux's source-controller and kustomize-controller from Go modules (once;
#                   cached by version under ${PRFAAS_CACHE:-${XDG_CACHE_HOME:-~/.cache}/prfaas-operator},
#                   with their CRDs and Flux's RBAC for them)

FLUX_BUILD := hack/build-flux.sh

.PHONY: flux-bin
flux-bin: ## build Flux's source-controller + kustomize-controller from Go modules (first time ~7 min on 2 idle cores, 3-6× that on a busy one; cached)
	@$(FLUX_BUILD) >/dev/null
