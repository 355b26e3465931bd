"""Development tooling of prfaas-operator, outside the runtime wheel and the image.

A local control plane (:mod:`prfaas_dev.cluster`) and Prometheus (:mod:`prfaas_dev.prometheus`),
one process supervisor (:mod:`prfaas_dev.procs`), one port picker (:mod:`prfaas_dev.ports`), one
kubectl wrapper (:mod:`prfaas_dev.kubectl`), the processes tests and benchmarks start
(:mod:`prfaas_dev.stack`, :mod:`prfaas_dev.peers`) and ``prfaas demo`` (:mod:`prfaas_dev.demo`).
"""
