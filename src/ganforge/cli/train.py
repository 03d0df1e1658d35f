"""Training commands: ``ganforge train``, ``ganforge presets`` and ``ganforge generate``.

``train``'s flags are ``TrainConfig``'s fields, part by part (one help panel each), all optional, so that
``resolve_config`` can layer defaults < ``--config`` file < ``--preset`` < flags; defaults are not shown
because a preset changes them.
"""

from __future__ import annotations

import json

import typer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ganforge.cli.common import user_errors
from ganforge.cli.options import Options, command
from ganforge.training.config import PARTS, PRESETS, TrainConfig, known_preset, preset_file

_SIGNAL_EXIT = 128  # a run stopped by signal N exits 128 + N, as the shell would report it


class TrainRunOptions(BaseModel):
    """How ``ganforge train`` runs, besides what is trained (``TrainConfig``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: str | None = Field(None, description="YAML or JSON file of flag values (flags and preset win).")
    dry_run: bool = Field(False, description="Run every check a real run makes first (dataset, model, output, "
                          "resume, tracking store), print the resolved config as JSON and exit.")


RUN_PANEL = "Run"
TRAIN_RUN = Options(TrainRunOptions, "train", panel=RUN_PANEL)
# The preset (TrainConfig's own field) beside --config, then one group per part, titled by the part.
TRAIN = (
    Options(TrainConfig, "train", skip=PARTS, required=False, show_defaults=False, panel=RUN_PANEL,
            notes={"preset": f"Presets: {', '.join(PRESETS)} (`ganforge presets` lists them)."}),
    *(Options(part, "train", required=False, show_defaults=False, panel=TrainConfig.model_fields[name].title)
      for name, part in PARTS.items()),
)  # fmt: skip


def train_command(**flags) -> None:
    """Train a generator on a ganforge dataset.

    Precedence, lowest first: defaults < --config file < --preset < flags. A higher layer's --epochs or
    --steps replaces a lower layer's either one; one layer giving both is an error.
    """
    from ganforge.training import resolve_config, train
    from ganforge.training.preflight import preflight

    run = TRAIN_RUN.build(flags)
    config = resolve_config({k: v for group in TRAIN for k, v in group.pick(flags).items()}, run.config)
    if run.dry_run:
        preflight(config)
        typer.echo(json.dumps(config.model_dump(mode="json"), indent=2))
        return
    result = train(config)
    tracked = f", MLflow run {result.run_id}" if result.run_id else ""
    if result.interrupted:
        typer.echo(f"stopped at step {result.step}: checkpoint {result.checkpoint}; continue with --resume latest")
        raise typer.Exit(_SIGNAL_EXIT + (result.stop_signal or 15))
    if result.checkpoint is None:  # resumed from a checkpoint already at the run's last step
        typer.echo(f"nothing to train: --resume {config.resume} is already at step {result.step}, where the run ends; "
                   f"no checkpoint written{tracked}")
        return
    typer.echo(
        f"trained {result.step} steps in {result.seconds:.1f}s ({result.images_per_second:.0f} images/s); "
        f"checkpoint {result.checkpoint}{tracked}"
    )


class PresetsOptions(BaseModel):
    """``ganforge presets``: list the presets, or show one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="A preset to show in full: its file, with its why and values. "
                             "None: list every preset.")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        return known_preset(v)


PRESETS_OPTIONS = Options(PresetsOptions, "presets", arguments=("name",))


def presets_command(**flags) -> None:
    """List the training presets (name, model, length, the image sides they are for), or show one's file."""
    opts = PRESETS_OPTIONS.build(flags)
    if opts.name is not None:
        typer.echo(f"# {opts.name}: ganforge/presets/{opts.name}.yaml")
        typer.echo(preset_file(opts.name).read_text().rstrip())
        return
    width = max(map(len, PRESETS))
    for name, preset in PRESETS.items():
        values = preset.overrides
        length = f"{values['steps']} steps" if values.get("steps") else f"{values.get('epochs')} epochs"
        if preset.from_seed:
            sides = f"{preset.image_size} px, seed {preset.from_seed}"
        else:
            sides = f"{'/'.join(map(str, preset.tuned_for))} px" if preset.tuned_for else "any size"
        typer.echo(f"{name:<{width}}  {values['model']:<7}  {length:<12}  {sides}")
    typer.echo("`ganforge presets NAME` shows one; `ganforge train --preset NAME` trains with it.")


class GenerateOptions(BaseModel):
    """``ganforge generate``: which generator, how many images, where they go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: str | None = Field(None, description="A ckpt-<step> directory or a run's --output (or use "
                                   "--model-uri).")
    model_uri: str | None = Field(None, description="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID "
                                  "(instead of --checkpoint).")
    n: int = Field(64, description="Number of images (interpolation steps with --interpolate).")
    labels: tuple[str, ...] | None = Field(None, description="Class ids or names, cycled over the images "
                                           "(conditional).")
    seed: int = Field(0, description="Seed of the latents.")
    interpolate: bool = Field(False, description="One latent walk in --n steps.")
    weights: str | None = Field(None, description="Generator weights: ema or raw. Default: ema when the "
                                "checkpoint has them, else raw.")
    device: str = Field("cpu", description="cpu, cuda, cuda:N or auto (CUDA when present).")
    out: str = Field(description="An image file (.png, .jpg, .webp...) for one grid in that format; any other "
                     "path is a directory for one PNG per image (000000.png, ...; same names are replaced).")


# --model was the registry URI here while it is the model family in `train`
GENERATE = Options(GenerateOptions, "generate", aliases={"model_uri": "--model"})


def generate_command(**flags) -> None:
    """Generate images from a trained checkpoint, or from the model registry (--model-uri), into one grid
    image or a directory of PNGs."""
    from ganforge.errors import GanforgeError
    from ganforge.inference import generate
    from ganforge.training.visuals import check_generate_flags, save_images

    opts = GENERATE.build(flags)
    if (opts.model_uri is None) == (opts.checkpoint is None):
        raise GanforgeError("give exactly one of --checkpoint DIR or --model-uri models:/NAME@ALIAS")
    check_generate_flags(opts.n, opts.seed, opts.out)  # before a download, not after
    checkpoint = opts.checkpoint
    if opts.model_uri is not None:
        from ganforge.registry import resolve_model_uri

        checkpoint = str(resolve_model_uri(opts.model_uri))
    images = generate(checkpoint, n=opts.n, labels=list(opts.labels) if opts.labels else None, seed=opts.seed, interpolate=opts.interpolate,
                      weights=opts.weights, device=opts.device)  # fmt: skip
    paths = save_images(images, opts.out, nrow=opts.n if opts.interpolate else None)
    typer.echo(f"wrote {len(images)} images to {opts.out}" + (f" ({len(paths)} files)" if len(paths) > 1 else ""))


def register(app: typer.Typer) -> None:
    """Add ``train``, ``presets`` and ``generate``."""
    app.command("train")(user_errors(command(train_command, TRAIN_RUN, *TRAIN)))
    app.command("presets")(user_errors(command(presets_command, PRESETS_OPTIONS)))
    app.command("generate")(user_errors(command(generate_command, GENERATE)))
