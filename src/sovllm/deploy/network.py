"""NetworkPolicies: nothing leaves the namespace but DNS, and each pod is reached only by those
that need it.

- every pod: ingress denied, egress only to DNS and to pods of this namespace;
- gateway: reachable on its port (clients, the ingress controller, Prometheus);
- vLLM: reachable from the gateway, and from Prometheus for /metrics (on the same port);
- database: reachable from the gateway, its own instances (replication) and the operators'
  namespaces; its instances also talk to the Kubernetes API (CloudNativePG's instance manager).
"""

from __future__ import annotations

from typing import Any

from sovllm.deploy import gateway, postgres, vllm
from sovllm.deploy.kube import Context, labels, meta
from sovllm.deploy.yamlout import Document

NAMESPACE_LABEL = "kubernetes.io/metadata.name"
DATABASE_PODS = {"cnpg.io/cluster": postgres.CLUSTER}


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: name}}}


def _tcp(*ports: int | str) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def _policy(ctx: Context, name: str, pods: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(ctx, name, "network"),
        "spec": {"podSelector": {"matchLabels": pods} if pods else {}, **spec},
    }


def default_deny(ctx: Context) -> Document:
    spec = {
        "policyTypes": ["Ingress", "Egress"],
        "egress": [
            {
                "to": [
                    {
                        **_namespace("kube-system"),
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    }
                ],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            },
            {"to": [{"podSelector": {}}]},
        ],
    }
    header = ("Every pod: no ingress, egress to DNS and this namespace only.",)
    return Document(_policy(ctx, "default-deny", {}, spec), header)


def gateway_ingress(ctx: Context) -> Document:
    spec = {
        "policyTypes": ["Ingress"],
        "ingress": [{"ports": _tcp(ctx.settings.gateway.port)}],
    }
    return Document(_policy(ctx, "gateway-ingress", labels(gateway.COMPONENT), spec))


def vllm_ingress(ctx: Context) -> Document:
    monitoring = _namespace(ctx.settings.monitoring_namespace)
    spec = {
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": labels(gateway.COMPONENT)}}],
                "ports": _tcp(vllm.PORT),
            },
            {"from": [monitoring], "ports": _tcp(vllm.PORT)},
        ],
    }
    pods = labels(vllm.COMPONENT, ctx.group)
    header = ("Only the gateway (and Prometheus, for /metrics) reaches the vLLM pods.",)
    return Document(_policy(ctx, f"{ctx.group}-ingress", pods, spec), header)


def database(ctx: Context) -> Document:
    operators = [_namespace(n) for n in ctx.settings.operator_namespaces]
    spec = {
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {"podSelector": {"matchLabels": labels(gateway.COMPONENT)}},
                    {"podSelector": {"matchLabels": DATABASE_PODS}},
                ],
                "ports": _tcp(5432),
            },
            # The operator reaches the instance manager's status port and PostgreSQL.
            {"from": operators, "ports": _tcp(5432, 8000)},
        ],
        "egress": [
            {"to": [{"podSelector": {"matchLabels": DATABASE_PODS}}], "ports": _tcp(5432)},
            # The Kubernetes API, whose address differs per cluster.
            {"ports": _tcp(443, 6443)},
        ],
    }
    header = ("Only the gateway, the database's own instances and the operators reach PostgreSQL.",)
    return Document(_policy(ctx, "database", DATABASE_PODS, spec), header)


def documents(ctx: Context) -> list[Document]:
    docs = [default_deny(ctx), gateway_ingress(ctx)]
    if not ctx.plan.embedded:
        docs.append(vllm_ingress(ctx))
    if ctx.settings.postgres.mode == "cnpg":
        docs.append(database(ctx))
    return docs
