"""The slow loop: kopf handlers (thin), Prometheus signals, /scale actuators, status writer."""
