"""The gateways' shared database: a CloudNativePG `Cluster` (the default), or an external
PostgreSQL whose URL is a Secret (`--postgres external`)."""

from __future__ import annotations

from typing import Any

from sovllm.deploy import secrets
from sovllm.deploy.kube import Context, meta, resources
from sovllm.deploy.yamlout import Document

CLUSTER = "sovllm-db"
COMPONENT = "database"


def database_env(ctx: Context) -> list[dict[str, Any]]:
    """The gateway's SOVLLM_DATABASE_URL. With CloudNativePG the user and password come from
    the Secret it makes (`<cluster>-app`) as libpq's PGUSER/PGPASSWORD, so a password is never
    spliced into a URL (where it would need escaping)."""
    if ctx.settings.postgres.mode == "external":
        ref = {"secretKeyRef": {"name": secrets.DATABASE_URL_NAME, "key": "url"}}
        return [{"name": "SOVLLM_DATABASE_URL", "valueFrom": ref}]
    app = f"{CLUSTER}-app"
    host = f"{CLUSTER}-rw.{ctx.namespace}.svc"
    db = ctx.settings.postgres.database
    return [
        {"name": "PGUSER", "valueFrom": {"secretKeyRef": {"name": app, "key": "username"}}},
        {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": app, "key": "password"}}},
        # CloudNativePG serves TLS with its own CA; `require` encrypts without checking it.
        {"name": "PGSSLMODE", "value": "require"},
        {"name": "SOVLLM_DATABASE_URL", "value": f"postgresql+psycopg://{host}:5432/{db}"},
    ]


def cluster(ctx: Context) -> Document:
    p = ctx.settings.postgres
    storage: dict[str, Any] = {"size": p.storage_size}
    if ctx.settings.storage_class:
        storage["storageClass"] = ctx.settings.storage_class
    obj = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": meta(ctx, CLUSTER, COMPONENT),
        "spec": {
            "instances": p.instances,
            "bootstrap": {"initdb": {"database": p.database, "owner": p.database}},
            "storage": storage,
            "resources": resources("2", "4Gi"),
            "enableSuperuserAccess": False,
            "monitoring": {"enablePodMonitor": False},
        },
    }
    header = (
        "PostgreSQL by CloudNativePG (install the operator first). One primary and standbys;",
        f"the gateways reach {CLUSTER}-rw; it makes the Secret {CLUSTER}-app.",
    )
    return Document(obj, header)


def documents(ctx: Context) -> list[Document]:
    return [cluster(ctx)] if ctx.settings.postgres.mode == "cnpg" else []
