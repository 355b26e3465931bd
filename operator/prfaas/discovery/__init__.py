"""Engines as Kubernetes lists them: EndpointSlices, read by the router (its own cluster) and by
the operator (a PrefillPool's cluster). ``slices`` is pure parsing; ``watch`` keeps one
selection current with a list-and-watch on the API server."""
