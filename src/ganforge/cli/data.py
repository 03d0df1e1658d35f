"""Dataset commands: ``ganforge ingest`` and ``ganforge datasets show``."""

from __future__ import annotations

import typer
from pydantic import BaseModel, ConfigDict, Field

from ganforge.cli.common import user_errors
from ganforge.cli.options import Options, command
from ganforge.data.config import IngestConfig

INGEST = Options(IngestConfig, "ingest", arguments=("source",), short={"output": "-o", "input": "-i"})


def ingest_command(**flags) -> None:
    """Turn SOURCE into a versioned Parquet dataset (local directory or s3://bucket/prefix)."""
    from ganforge.data.ingest import run_ingest
    from ganforge.outputs import check_output_dir

    config = INGEST.build(flags)
    if "://" not in config.output:  # a local directory: writable before any image is read (/proc/x, a file)
        check_output_dir(config.output, "--output")
    result = run_ingest(config)
    counts = ", ".join(f"{k}={v}" for k, v in result.manifest["counts"]["splits"].items())
    state = "up to date, nothing written" if result.reused else f"written in {result.seconds:.1f}s"
    typer.echo(f"dataset {result.uri}: {counts} ({state})")
    typer.echo(f"fingerprint {result.fingerprint}")


class ShowOptions(BaseModel):
    """``ganforge datasets show``: what to print about a dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str = Field(description="Dataset location: a local directory or s3://bucket/prefix.")
    grid: str | None = Field(None, description="Save a grid of sample images to this PNG path.")
    split: str = Field("train", description="Split to draw the --grid samples from.")
    n: int = Field(64, description="Number of images in the --grid.")


SHOW = Options(ShowOptions, "datasets show", arguments=("uri",))


def show_command(**flags) -> None:
    """Print the manifest and a class histogram; optionally save a grid of samples."""
    from ganforge.data.show import check_grid, check_n, print_dataset, save_grid

    opts = SHOW.build(flags)
    if opts.grid:  # both checked before reading anything
        check_grid(opts.grid, opts.n)
    else:
        check_n(opts.n)
    print_dataset(opts.uri, split=opts.split if opts.grid else None)
    if opts.grid:
        save_grid(opts.uri, opts.grid, split=opts.split, n=opts.n)
        typer.echo(f"grid saved to {opts.grid}")


def register(app: typer.Typer) -> None:
    """Add ``ingest`` and the ``datasets`` group."""
    datasets_app = typer.Typer(help="Inspect ganforge datasets.", no_args_is_help=True)
    app.command("ingest")(user_errors(command(ingest_command, INGEST)))
    datasets_app.command("show")(user_errors(command(show_command, SHOW)))
    app.add_typer(datasets_app, name="datasets")
