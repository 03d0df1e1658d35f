"""Training commands: ``ganforge train`` and ``ganforge generate``.

``train``'s flags are made from ``TrainConfig``'s fields (name, type and description), so the CLI,
the config file, the library and the MLflow params can never disagree on a name. Every flag
defaults to "not given" (None) so that ``resolve_config`` can layer file < preset < flags.

No ``from __future__ import annotations`` here: annotations must stay real types because
``cli_registry`` copies ``generate_command``'s signature into its own command.
"""

import inspect
import json
import types
import typing
from typing import Optional

import typer

from ganforge.training.config import PRESETS, TrainConfig

_SIGNAL_EXIT = 128  # a run stopped by signal N exits 128 + N, as the shell would report it


def _base_type(annotation) -> type:
    """``int | None`` -> int, ``Literal['a', 'b']`` -> str: the type typer parses the flag as."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return type(args[0])
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return _base_type(args[0])
    return annotation


def _train_parameters() -> list[inspect.Parameter]:
    """One optional typer option per ``TrainConfig`` field, plus ``--config`` and ``--dry-run``."""
    params = [
        inspect.Parameter(
            "config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
            default=typer.Option(None, "--config", help="YAML or JSON file of flag values (flags and preset win)."),
        ),
        inspect.Parameter(
            "dry_run", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
            default=typer.Option(False, "--dry-run", help="Run every check a real run makes first (dataset, "
                                 "model, output, resume, tracking store), print the resolved config as JSON and exit."),
        ),
    ]  # fmt: skip
    for name, field in TrainConfig.model_fields.items():
        base = _base_type(field.annotation)
        flag = "--" + name.replace("_", "-")
        decls = [f"{flag}/--no-{flag[2:]}"] if base is bool else [flag]
        text = field.description + (f" Presets: {', '.join(PRESETS)}." if name == "preset" else "")
        option = typer.Option(None, *decls, help=text, show_default=False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[base]))
    return params


def train_command(**flags) -> None:
    """Train a generator on a ganforge dataset.

    Precedence, lowest first: defaults < --config file < --preset < flags. A higher layer's --epochs or
    --steps replaces a lower layer's either one; one layer giving both is an error.
    """
    from ganforge.training import resolve_config, train
    from ganforge.training.preflight import preflight

    config_file, dry_run = flags.pop("config"), flags.pop("dry_run")
    config = resolve_config(flags, config_file)
    if dry_run:
        preflight(config)
        typer.echo(json.dumps(config.model_dump(mode="json"), indent=2))
        return
    result = train(config)
    run = f", MLflow run {result.run_id}" if result.run_id else ""
    if result.interrupted:
        typer.echo(f"stopped at step {result.step}: checkpoint {result.checkpoint}; continue with --resume latest")
        raise typer.Exit(_SIGNAL_EXIT + (result.stop_signal or 15))
    typer.echo(
        f"trained {result.step} steps in {result.seconds:.1f}s ({result.images_per_second:.0f} images/s); "
        f"checkpoint {result.checkpoint}{run}"
    )


train_command.__signature__ = inspect.Signature(_train_parameters())


def generate_command(
    checkpoint: str = typer.Option(..., "--checkpoint", help="A ckpt-<step> directory or a run's --output."),
    n: int = typer.Option(64, "--n", help="Number of images (interpolation steps with --interpolate)."),
    labels: Optional[str] = typer.Option(
        None, "--labels", help="Comma-separated class ids or names, cycled over the images (conditional)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the latents."),
    interpolate: bool = typer.Option(False, "--interpolate", help="One latent walk in --n steps."),
    weights: Optional[str] = typer.Option(
        None, "--weights", help="Generator weights: ema or raw. Default: ema when the checkpoint has them, else raw."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto (CUDA when present)."),
    out: str = typer.Option(
        ..., "--out", help="An image file (.png, .jpg, .webp...) for one grid in that format; any other path is "
        "a directory for one PNG per image (000000.png, ...; same names are replaced)."
    ),
) -> None:
    """Generate images from a trained checkpoint into one grid image or a directory of PNGs."""
    from ganforge.training.visuals import check_generate_flags, generate, save_images

    check_generate_flags(n, seed, out)
    wanted = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    images = generate(checkpoint, n=n, labels=wanted, seed=seed, interpolate=interpolate, weights=weights,
                      device=device)  # fmt: skip
    paths = save_images(images, out, nrow=n if interpolate else None)
    typer.echo(f"wrote {len(images)} images to {out}" + (f" ({len(paths)} files)" if len(paths) > 1 else ""))


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``generate`` to the ganforge app."""
    from ganforge.cli import user_errors

    app.command("train")(user_errors(train_command))
    app.command("generate")(user_errors(generate_command))
