"""The fast loop as an HTTP data plane (``prfaas router``): an OpenAI-compatible front that
runs the P/D flow itself (prefill on the PrefillPool or a local PD-P instance, then decode on
a local PD-D instance), a decision-only API for gateways that proxy themselves, telemetry and
``/metrics``. Every placement is ``prfaas.routing``'s, the code the simulator runs too."""
