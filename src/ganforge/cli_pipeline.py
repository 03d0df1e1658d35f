"""Pipeline commands: ``ganforge pipeline compile | run --local | submit``.

``run`` and ``submit`` take one flag per pipeline parameter, made from ``PipelineParams``' fields (so the
flag, the KFP parameter and the MLflow param share one name); ``compile`` takes the cluster options of
``ClusterConfig``. Values are validated before anything runs or is sent.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional

import typer

from ganforge.pipeline.params import ClusterConfig, PipelineParams

pipeline_app = typer.Typer(help="The KFP pipeline: ingest -> train -> evaluate || audit -> gate -> register.",
                           no_args_is_help=True)


def _options(model, skip=()) -> list[inspect.Parameter]:
    """One optional typer option per field of ``model`` (None: the field's default)."""
    from ganforge.cli_train import _base_type

    out = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        base = _base_type(field.annotation)
        flag = "--" + name.replace("_", "-")
        option = typer.Option(None, flag, help=field.description, show_default=False)
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[base]))
    return out


def _given(flags: dict, model) -> dict:
    return {k: flags.pop(k) for k in list(flags) if k in model.model_fields and flags[k] is not None}


def compile_command(**flags) -> None:
    """Compile the pipeline to a KFP YAML package for a cluster (GPU node pool, Secrets, image)."""
    from ganforge.pipeline.params import check_cluster
    from ganforge.pipeline.runner import compile_pipeline

    output = flags.pop("output")
    seconds = compile_pipeline(output, check_cluster(_given(flags, ClusterConfig)))
    typer.echo(f"wrote {output} in {seconds:.2f}s")


compile_command.__signature__ = inspect.Signature([
    inspect.Parameter("output", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                      default=typer.Option("gan_pipeline.yaml", "--output", "-o", help="YAML file to write.")),
    *_options(ClusterConfig),
])  # fmt: skip


def run_command(**flags) -> None:
    """Run the whole pipeline on this machine through kfp.local (digits, local files, sqlite MLflow)."""
    from ganforge.errors import GanforgeError
    from ganforge.pipeline.params import check_given
    from ganforge.pipeline.runner import local_params, run_local

    if not flags.pop("local"):
        raise GanforgeError("only --local runs here; use `ganforge pipeline submit --host URL` for a cluster")
    root = Path(flags.pop("dir")).resolve()
    given = _given(flags, PipelineParams)
    check_given(given)
    params = local_params(root, **given)
    result = run_local(params, root)
    typer.echo(f"pipeline run {result.pipeline_run_id} {result.status} in {result.seconds:.0f}s: {result.outcome}")
    typer.echo(f"MLflow run:       {result.parent_run_id} (experiment {params.experiment}, {result.tracking_uri})")
    typer.echo(f"registered:       {result.registered + ' (alias candidate)' if result.registered else 'nothing'}")
    typer.echo(f"sample grid:      {result.grid or 'none'}")
    typer.echo(f"open the MLflow UI: mlflow ui --backend-store-uri {result.tracking_uri}")


run_command.__signature__ = inspect.Signature([
    inspect.Parameter("local", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=typer.Option(False, "--local", help="Run through kfp.local on this machine.")),
    inspect.Parameter("dir", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                      default=typer.Option("outputs/demo", "--dir", help="Where datasets, checkpoints, "
                                           "kfp outputs and the sqlite MLflow store go.")),
    *_options(PipelineParams, skip=("dataset", "work_dir")),
    *[p for p in _options(PipelineParams) if p.name in ("dataset", "work_dir")],
])  # fmt: skip


def submit_command(**flags) -> None:
    """Compile and submit the pipeline to a Kubeflow Pipelines endpoint; prints the run URL."""
    from ganforge.pipeline.params import check_cluster, check_given, check_params
    from ganforge.pipeline.runner import submit

    host, namespace, token, cred_path = flags.pop("host"), flags.pop("namespace"), flags.pop("token"), flags.pop("credentials")
    given = _given(flags, PipelineParams)
    check_given(given)
    params = check_params(given)
    cluster = check_cluster(_given(flags, ClusterConfig))
    credentials = None
    if cred_path:
        from kfp.client import ServiceAccountTokenVolumeCredentials

        credentials = ServiceAccountTokenVolumeCredentials(cred_path)
    url = submit(host, params, cluster, namespace=namespace, token=token, credentials=credentials)
    typer.echo(url)


submit_command.__signature__ = inspect.Signature([
    inspect.Parameter("host", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                      default=typer.Option(..., "--host", help="KFP API endpoint, e.g. https://kfp.example.com/pipeline.")),
    inspect.Parameter("namespace", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                      default=typer.Option(None, "--namespace", help="Kubeflow profile namespace (multi-user).")),
    inspect.Parameter("token", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                      default=typer.Option(None, "--token", help="Bearer token for the endpoint.", envvar="KFP_TOKEN")),
    inspect.Parameter("credentials", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                      default=typer.Option(None, "--credentials", help="File holding a service-account token "
                                           "(e.g. a projected volume).")),
    *_options(PipelineParams),
    *_options(ClusterConfig),
])  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add the ``pipeline`` command group to the ganforge app."""
    from ganforge.cli import user_errors

    pipeline_app.command("compile")(user_errors(compile_command))
    pipeline_app.command("run")(user_errors(run_command))
    pipeline_app.command("submit")(user_errors(submit_command))
    app.add_typer(pipeline_app, name="pipeline")
