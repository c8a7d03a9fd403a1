"""Entry points that run a service: the gateway, a worker, and the wiring of both."""
