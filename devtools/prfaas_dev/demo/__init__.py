"""``prfaas demo``: the whole system live on one machine, on the paper's case study.

Two API servers (two datacenters), the CRDs and case-study resources, the operator (slow loop)
reading a real Prometheus, the router (fast loop), simulated H200/H20 engines started and
stopped as the operator scales their Deployments, a shaped link, and open-loop case-study
traffic, time-scaled; first a homogeneous PD baseline under the same load for comparison.
"""
