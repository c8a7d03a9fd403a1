"""The Secrets the gateway mounts, written with placeholders only.

They go to `secrets.example.yaml`, outside the Kustomize base: `kubectl apply -k` would
otherwise put the placeholders back over the real keys on every apply. The operator fills a
copy once (the header says how) and applies it before the base; the real keys never enter the
manifests' repository. A gateway started with a placeholder refuses to start and names the file.
"""

from __future__ import annotations

from sovllm.deploy.kube import Context, meta
from sovllm.deploy.yamlout import Document

KEYS_NAME = "sovllm-keys"
DATABASE_URL_NAME = "sovllm-database-url"
AUDIT_KEY = "audit-signing.key"
MASTER_KEY = "master.key"
PSEUDONYM_KEY = "pseudonym.key"
PLACEHOLDER = "REPLACE-ME"
FILE = "secrets.example.yaml"


def keys(ctx: Context) -> Document:
    n = ctx.namespace
    header = (
        "PLACEHOLDERS: never commit the real values. Make the keys once and keep them in your",
        "secret store; every gateway must share them (the audit log's signatures, the data",
        "subjects' keys and the pseudonyms depend on them):",
        f"  kubectl -n {n} create secret generic {KEYS_NAME} \\",
        f"    --from-file={AUDIT_KEY}=<(openssl rand -base64 32) \\",
        f"    --from-file={MASTER_KEY}=<(openssl rand -base64 32) \\",
        f"    --from-file={PSEUDONYM_KEY}=<(openssl rand -base64 32)",
        "Lose the master key and every encrypted content is lost; back it up offline.",
    )
    obj = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(ctx, KEYS_NAME, "gateway"),
        "type": "Opaque",
        "stringData": {AUDIT_KEY: PLACEHOLDER, MASTER_KEY: PLACEHOLDER, PSEUDONYM_KEY: PLACEHOLDER},
    }
    return Document(obj, header)


def database_url(ctx: Context) -> Document:
    header = (
        "PLACEHOLDER (--postgres external): the gateways' database, as a SQLAlchemy URL:",
        f"  kubectl -n {ctx.namespace} create secret generic {DATABASE_URL_NAME} \\",
        "    --from-literal=url='postgresql+psycopg://USER:PASSWORD@HOST:5432/sovllm"
        "?sslmode=verify-full'",
    )
    obj = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(ctx, DATABASE_URL_NAME, "gateway"),
        "type": "Opaque",
        "stringData": {"url": PLACEHOLDER},
    }
    return Document(obj, header)


def documents(ctx: Context) -> list[Document]:
    docs = [keys(ctx)]
    if ctx.settings.postgres.mode == "external":
        docs.append(database_url(ctx))
    return docs
