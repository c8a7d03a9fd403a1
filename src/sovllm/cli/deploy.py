"""`sovllm deploy kubernetes`: a Kustomize base from a capacity plan (docs/kubernetes.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sovllm.cli.common import EXIT_FAILED, EXIT_USAGE, fail

deploy_app = typer.Typer(help="Deployment manifests generated from a capacity plan.")


@deploy_app.command("kubernetes")
def kubernetes(
    plan: Annotated[
        Path, typer.Option("--plan", help="`sovllm plan size --json` or `plan predict --json`.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder the Kustomize base is written to.")],
    config: Annotated[
        Path | None, typer.Option("--config", help="deploy.yaml: images, namespace, storage…")
    ] = None,
    assignments: Annotated[
        list[str] | None,
        typer.Option("--set", help="key=value (dotted keys, e.g. images.vllm=…); repeatable."),
    ] = None,
    postgres: Annotated[
        str | None, typer.Option("--postgres", help="cnpg (a CloudNativePG Cluster) or external.")
    ] = None,
    validate: Annotated[
        bool,
        typer.Option("--validate/--no-validate", help="Check every object offline first."),
    ] = True,
) -> None:
    """Write vLLM Deployments, the gateway, PostgreSQL, NetworkPolicies, scaling and
    monitoring for the plan's replica group, ready for `kubectl apply -k OUT`."""
    from sovllm.deploy.kube import Context
    from sovllm.deploy.plan_input import PlanError, read_plan
    from sovllm.deploy.render import problems, render, write
    from sovllm.deploy.settings import DeployConfigError, load_deploy_settings

    extra = list(assignments or [])
    if postgres is not None:
        if postgres not in {"cnpg", "external"}:
            raise typer.BadParameter("must be cnpg or external", param_hint="--postgres")
        extra.append(f"postgres.mode={postgres}")
    try:
        ctx = Context(read_plan(plan), load_deploy_settings(config, extra))
    except (PlanError, DeployConfigError) as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    if validate:
        found = problems(ctx, render(ctx))
        if found:
            lines = "\n  ".join(found)
            raise fail(f"the manifests do not validate; nothing written:\n  {lines}", EXIT_FAILED)
    try:
        written = write(ctx, out)
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror}", EXIT_FAILED) from None
    for path in written:
        typer.echo(str(path))
    checked = (
        f"validated for Kubernetes {ctx.settings.kubernetes_version}"
        if validate
        else "not validated"
    )
    typer.echo(f"{len(written)} files ({checked}); apply with: kubectl apply -k {out}", err=True)
    if (
        not ctx.plan.embedded
        and ctx.settings.weights.source != "image"
        and not ctx.settings.weights.sha256
    ):
        typer.echo(
            "sovllm: warning: weights.sha256 is empty: the vLLM pods will not start until "
            "the allow-list holds the weights' SHA-256 (docs/kubernetes.md)",
            err=True,
        )
