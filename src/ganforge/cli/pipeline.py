"""Pipeline commands: ``ganforge pipeline compile | run --local | submit``.

``run`` and ``submit`` take one flag per pipeline parameter (``PipelineParams``: the flag, the KFP
parameter and the MLflow param share one name); ``compile`` and ``submit`` take the cluster options
(``ClusterConfig``). Values are validated before anything runs or is sent.
"""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import BaseModel, ConfigDict, Field

from ganforge.cli.common import user_errors
from ganforge.cli.options import Options, command
from ganforge.pipeline.params import ClusterConfig, PipelineParams


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CompileOptions(_Opts):
    output: str = Field("gan_pipeline.yaml", description="YAML file to write.")


class LocalRunOptions(_Opts):
    local: bool = Field(False, description="Run through kfp.local on this machine.")
    dir: str = Field("outputs/demo", description="Where datasets, checkpoints, kfp outputs and the sqlite "
                     "MLflow store go.")
    verbose: bool = Field(False, description="Also print KFP's executor logs (always written to <dir>/logs/).")


class SubmitOptions(_Opts):
    host: str = Field(description="KFP API endpoint, e.g. https://kfp.example.com/pipeline.")
    namespace: str | None = Field(None, description="Kubeflow profile namespace (multi-user).")
    token: str | None = Field(None, description="Bearer token for the endpoint.")
    credentials: str | None = Field(None, description="File holding a service-account token (e.g. a projected "
                                    "volume).")


COMPILE = Options(CompileOptions, "pipeline compile", short={"output": "-o"})
# None means "ClusterConfig's default", which may come from $GANFORGE_IMAGE: checked by check_cluster
CLUSTER = Options(ClusterConfig, "pipeline", show_defaults=False)
LOCAL = Options(LocalRunOptions, "pipeline run")
# the local run fills dataset, work_dir, n and audit_n from --dir (``local_params``): PipelineParams'
# defaults are the cluster's, so they are not shown here
LOCAL_PARAMS = Options(PipelineParams, "pipeline run", show_defaults=False)
SUBMIT = Options(SubmitOptions, "pipeline submit", envvar={"token": "KFP_TOKEN"})
PARAMS = Options(PipelineParams, "pipeline submit")


def build_pipeline(cluster: ClusterConfig | None = None):
    """The pipeline of ``pipelines/gan_pipeline.py`` built for ``cluster``: what the CLI hands the runner.

    ``pipelines`` and ``components`` ship in the wheel as top-level packages beside ganforge; the CLI, the
    entry point, is the one part of ganforge that imports them (the library takes this builder). They are
    imported when the runner builds the pipeline, after its checks on the run.

    Raises:
        GanforgeError: the ``pipelines`` or ``components`` package is not installed beside ganforge.
    """
    from ganforge.errors import GanforgeError

    try:
        from pipelines.gan_pipeline import build
    except ModuleNotFoundError as exc:
        if exc.name not in ("pipelines", "pipelines.gan_pipeline", "components"):
            raise  # a missing dependency is its own error, not a missing pipeline
        raise GanforgeError(f"the {exc.name} package is not installed beside ganforge; reinstall ganforge "
                            "(pip install . or pip install -e .)") from None
    return build(cluster)


def compile_command(**flags) -> None:
    """Compile the pipeline to a KFP YAML package for a cluster (GPU node pool, Secrets, image)."""
    from ganforge.pipeline.params import check_cluster
    from ganforge.pipeline.runner import compile_pipeline

    output = COMPILE.build(flags).output
    seconds = compile_pipeline(output, check_cluster(CLUSTER.pick(flags)), build=build_pipeline)
    typer.echo(f"wrote {output} in {seconds:.2f}s")


def run_command(**flags) -> None:
    """Run the whole pipeline on this machine through kfp.local (digits, local files, sqlite MLflow)."""
    from ganforge.errors import GanforgeError
    from ganforge.pipeline.params import check_given
    from ganforge.pipeline.runner import local_params, run_local

    opts = LOCAL.build(flags)
    if not opts.local:
        raise GanforgeError("only --local runs here; use `ganforge pipeline submit --host URL` for a cluster")
    root = Path(opts.dir).resolve()
    given = LOCAL_PARAMS.pick(flags)
    check_given(given)
    params = local_params(root, **given)
    result = run_local(params, root, verbose=opts.verbose, build=build_pipeline)
    typer.echo(f"pipeline run {result.pipeline_run_id} {result.status} in {result.seconds:.0f}s: {result.outcome}")
    typer.echo(f"MLflow run:       {result.parent_run_id} (experiment {params.experiment}, {result.tracking_uri})")
    typer.echo(f"registered:       {result.registered + ' (alias candidate)' if result.registered else 'nothing'}")
    typer.echo(f"sample grid:      {result.grid or 'none'}")
    typer.echo(f"executor logs:    {result.log}")
    typer.echo(f"open the MLflow UI: mlflow ui --backend-store-uri {result.tracking_uri}")
    typer.echo(f"runs table:       {result.runs_url}")


def submit_command(**flags) -> None:
    """Compile and submit the pipeline to a Kubeflow Pipelines endpoint; prints the run URL."""
    from ganforge.pipeline.params import check_cluster, check_given, check_params
    from ganforge.pipeline.runner import submit

    target = SUBMIT.build(flags)
    given = PARAMS.pick(flags)
    check_given(given)
    params = check_params(given)
    cluster = check_cluster(CLUSTER.pick(flags))
    credentials = None
    if target.credentials:
        from kfp.client import ServiceAccountTokenVolumeCredentials

        credentials = ServiceAccountTokenVolumeCredentials(target.credentials)
    url = submit(target.host, params, cluster, build=build_pipeline, namespace=target.namespace, token=target.token,
                 credentials=credentials)
    typer.echo(url)


def register(app: typer.Typer) -> None:
    """Add the ``pipeline`` command group."""
    pipeline_app = typer.Typer(help="The KFP pipeline: ingest -> train -> evaluate || audit -> gate -> register.",
                               no_args_is_help=True)
    pipeline_app.command("compile")(user_errors(command(compile_command, COMPILE, CLUSTER)))
    pipeline_app.command("run")(user_errors(command(run_command, LOCAL, LOCAL_PARAMS)))
    pipeline_app.command("submit")(user_errors(command(submit_command, SUBMIT, PARAMS, CLUSTER)))
    app.add_typer(pipeline_app, name="pipeline")
