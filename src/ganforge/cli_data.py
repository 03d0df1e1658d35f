"""Dataset commands: ``ganforge ingest`` and ``ganforge datasets show``."""

from __future__ import annotations

from typing import Optional

import typer

from ganforge.config import IngestConfig

_F = IngestConfig.model_fields


def _help(name: str) -> str:
    return _F[name].description or ""


def ingest_command(
    source: str = typer.Argument(..., help="mnist, fashion-mnist, kmnist, galaxy10, folder or digits."),
    output: str = typer.Option(..., "--output", "-o", help=_help("output")),
    input: Optional[str] = typer.Option(None, "--input", "-i", help=_help("input")),
    download: bool = typer.Option(False, "--download/--no-download", help=_help("download")),
    image_size: Optional[int] = typer.Option(None, "--image-size", help=_help("image_size")),
    channels: Optional[int] = typer.Option(None, "--channels", help=_help("channels")),
    aspect: str = typer.Option("crop", "--aspect", help=_help("aspect")),
    limit: Optional[int] = typer.Option(None, "--limit", help=_help("limit")),
    classes: Optional[str] = typer.Option(None, "--classes", help=_help("classes") + " Comma-separated."),
    split_seed: int = typer.Option(0, "--split-seed", help=_help("split_seed")),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help=_help("val_fraction")),
    shard_size_mb: float = typer.Option(64.0, "--shard-size-mb", help=_help("shard_size_mb")),
    overwrite: bool = typer.Option(False, "--overwrite", help=_help("overwrite")),
) -> None:
    """Turn SOURCE into a versioned Parquet dataset (local directory or s3://bucket/prefix)."""
    from ganforge.data.ingest import run_ingest

    cfg = IngestConfig(
        source=source, output=output, input=input, download=download, image_size=image_size,
        channels=channels, aspect=aspect, limit=limit,
        classes=tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None,
        split_seed=split_seed, val_fraction=val_fraction, shard_size_mb=shard_size_mb, overwrite=overwrite,
    )
    result = run_ingest(cfg)
    counts = ", ".join(f"{k}={v}" for k, v in result.manifest["counts"]["splits"].items())
    state = "up to date, nothing written" if result.reused else f"written in {result.seconds:.1f}s"
    typer.echo(f"dataset {result.uri}: {counts} ({state})")
    typer.echo(f"fingerprint {result.fingerprint}")


datasets_app = typer.Typer(help="Inspect ganforge datasets.", no_args_is_help=True)


def show_command(
    uri: str = typer.Argument(..., help="Dataset location: a local directory or s3://bucket/prefix."),
    grid: Optional[str] = typer.Option(None, "--grid", help="Save a grid of sample images to this PNG path."),
    split: str = typer.Option("train", "--split", help="Split to draw the --grid samples from."),
    n: int = typer.Option(64, "--n", help="Number of images in the --grid."),
) -> None:
    """Print the manifest and a class histogram; optionally save a grid of samples."""
    from ganforge.data.show import check_grid, check_n, print_dataset, save_grid

    if grid:  # both checked before reading anything
        check_grid(grid, n)
    else:
        check_n(n)
    print_dataset(uri, split=split if grid else None)
    if grid:
        save_grid(uri, grid, split=split, n=n)
        typer.echo(f"grid saved to {grid}")


def register(app: typer.Typer) -> None:
    from ganforge.cli import user_errors

    app.command("ingest")(user_errors(ingest_command))
    datasets_app.command("show")(user_errors(show_command))
    app.add_typer(datasets_app, name="datasets")
