"""Model provenance: the signed allow-list of model weights (allowlist.py), its setting
(settings.py) and the start-up check of what the service loads or routes to (gate.py)."""
