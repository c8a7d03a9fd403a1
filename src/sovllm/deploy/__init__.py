"""`sovllm deploy kubernetes`: Kubernetes objects from a capacity plan.

Outside the request-path layers, like `planner`: it reads the planner's JSON and writes YAML,
and imports none of api, gateway or serve. plan_input.py reads the plan, settings.py the
overrides, one module per concern builds objects (vllm, weights, gateway, secrets, postgres,
network, scaling, monitoring), render.py writes the Kustomize base, validate.py and checks.py
check it offline.
"""
