"""Training configuration: ``TrainConfig``, made of parts, and ``PRESETS``, read from ``ganforge/presets/*.yaml``.

A config is a few parts, each handed whole to what it drives: the networks (``NetworkSpec``, declared in
``models/spec.py``), the data and the run's length, the objective and update scheme, the optimiser and its
schedule, the EMA, outputs and tracking, the FID probe, and the hardware. Outside, a config stays flat: config
files, flags, presets, MLflow params and checkpoints name each field alone (``lr_g``, ``g_channels: 256,128``),
``TrainConfig(lr_g=...)`` takes it so, ``model_dump()`` gives it so, and a refusal names the flag. Reading
``config.lr_g`` reaches into its part; that is for the transition, new code reads ``config.optim.lr_g``.

Precedence, lowest first: field defaults < ``--config FILE`` (YAML or JSON) < ``--preset`` < explicit
flags. ``resolve_config`` applies it; every other module receives a validated ``TrainConfig``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, InitErrorDetails

from ganforge.errors import GanforgeError
from ganforge.models import MODELS
from ganforge.models.layers import ACTIVATIONS
from ganforge.models.spec import NetworkSpec, known_model
from ganforge.training.parts import (
    AUGMENT_NAMES,
    MAX_SEED,
    DataOrder,
    EmaSettings,
    FidProbe,
    Hardware,
    Optimiser,
    Outputs,
    UpdateScheme,
)

__all__ = ["ACTIVATION_NAMES", "AUGMENT_NAMES", "MAX_SEED", "MODEL_NAMES", "PARTS", "PRESETS", "RESUME_FREE", "Preset",
           "TrainConfig", "check_preset_size", "known_model", "known_preset", "load_config_file", "preset_file",
           "preset_size_note", "resolve_config"]

MODEL_NAMES = tuple(MODELS)  # the registry's keys, checked equal to ganforge.names.MODEL_NAMES at import
ACTIVATION_NAMES = ACTIVATIONS

# Fields that may change between a run and its resume without changing what is trained: where things
# go, how often they are written, how long to run and on what hardware. Everything else must match.
RESUME_FREE = frozenset(
    {
        "epochs", "steps", "output", "experiment", "checkpoint_every", "keep_checkpoints", "sample_every",
        "log_every", "compile", "on_nan", "resume", "nproc", "device", "track", "overwrite", "preset", "dataset",
        "fid_every", "fid_n", "fid_backbone", "fid_backbone_weights", "fid_backbone_sha256", "sample_every_epochs",
        "threads", "interpolation", "interpolation_steps", "precision", "sample_counter",
    }
)  # fmt: skip


def known_preset(v: str | None) -> str | None:
    """``v`` if it names a preset (or is None); shared by every config that takes --preset."""
    if v is not None and v not in PRESETS:
        raise ValueError(f"unknown preset {v!r}; choose one of {', '.join(PRESETS)}")
    return v


class TrainConfig(BaseModel):
    """Everything that defines a training run, in parts; every part's field is a ``ganforge train`` flag.

    Built flat (``TrainConfig(dataset=..., model=..., lr_g=...)``), dumped flat (``model_dump()``: layer tables
    as comma text) and refused flat (a ``ValidationError``'s locations name the field alone), as it was before
    it had parts; each part's title is its flags' panel in ``train --help``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str | None = Field(None, description="Name of the preset applied (see PRESETS). None: no preset.")
    data: DataOrder = Field(title="Data and length", description="What is trained on, in which order, how long.")
    network: NetworkSpec = Field(title="Network", description="The networks (models/spec.py).")
    updates: UpdateScheme = Field(title="Objective and updates", description="Losses and the update scheme.")
    optim: Optimiser = Field(title="Optimiser and schedule", description="Optimisers and learning rates.")
    ema: EmaSettings = Field(title="EMA", description="The generator's moving average.")
    outputs: Outputs = Field(title="Outputs and tracking", description="Checkpoints, samples, MLflow, NaNs.")
    fid_probe: FidProbe = Field(title="FID probe", description="The FID measured while training.")
    hardware: Hardware = Field(title="Hardware", description="Device, processes and threads.")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        return known_preset(v)

    @model_validator(mode="wrap")
    @classmethod
    def _flat(cls, data: Any, handler) -> TrainConfig:
        """Take flat fields into their parts; give back a refusal located at the field alone (``("lr_g",)``),
        so that the CLI names the flag and a model-wide rule (loc ``()``) stays one."""
        try:
            return handler(_nest(data) if isinstance(data, dict) else data)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(exc.title, [_at_field(e) for e in exc.errors()]) from None

    @model_validator(mode="after")
    def _ranks_share_batches(self) -> TrainConfig:
        if self.data.batch_size % self.hardware.nproc:
            raise ValueError(f"--batch-size {self.data.batch_size} must be divisible by --nproc {self.hardware.nproc}")
        return self

    @model_serializer(mode="wrap")
    def _flat_dump(self, handler) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in handler(self).items():
            out.update({k: _as_text(v) for k, v in value.items()} if name in PARTS else {name: value})
        return out

    def __getattr__(self, name: str) -> Any:
        # A flat field's value from its part (``config.lr_g``): for the code written before the parts. Typed
        # Any: a checker cannot follow the read-through, so flat reads go unchecked (``config.optim.lr_g`` is).
        part = PART_OF.get(name)
        if part is None:
            # pydantic's own (private attributes, else AttributeError), defined outside TYPE_CHECKING
            return super().__getattr__(name)  # type: ignore[misc]
        return getattr(getattr(self, part), name)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """pydantic's copy, with ``update`` given by flat field names (``{"lr_g": 1e-3}``) as to the constructor."""
        update = dict(update or {})
        for part in PARTS:
            own = {k: update.pop(k) for k in [k for k in update if PART_OF.get(k) == part]}
            if own:
                update[part] = update.get(part, getattr(self, part)).model_copy(update=own, deep=deep)
        return super().model_copy(update=update, deep=deep)

    @classmethod
    def flat_fields(cls) -> dict[str, FieldInfo]:
        """Every flag's field by its name: the top-level ones, then each part's in order."""
        top = {k: f for k, f in cls.model_fields.items() if k not in PARTS}
        return {**top, **{k: f for part in PARTS.values() for k, f in part.model_fields.items()}}

    @property
    def objective(self) -> str:
        """The GAN objective actually used (``loss`` with its family default filled in)."""
        return self.updates.loss or ("wgan-gp" if self.network.model == "wgan-gp" else "bce")

    def mismatches(self, other: TrainConfig) -> list[str]:
        """Names of fields that differ and matter for an exact resume (see ``RESUME_FREE``), sorted."""
        a, b = self.model_dump(), other.model_dump()
        return sorted(k for k in a if k not in RESUME_FREE and a[k] != b.get(k))


PARTS: dict[str, type[BaseModel]] = {
    name: f.annotation for name, f in TrainConfig.model_fields.items()
    if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
}  # fmt: skip
PART_OF = {field: part for part, model in PARTS.items() for field in model.model_fields}
_declared = [n for model in PARTS.values() for n in model.model_fields] + [n for n in TrainConfig.model_fields]
if len(_declared) != len(set(_declared)):  # a flat name must say which field it is
    raise TypeError(f"TrainConfig's parts share field names: {sorted({n for n in _declared if _declared.count(n) > 1})}")


def _at_field(e: ErrorDetails) -> InitErrorDetails:
    """A part's error re-raised at the field alone: ``("optim", "lr_g")`` -> ``("lr_g",)``."""
    loc = e["loc"][1:] if e["loc"][:1] and e["loc"][0] in PARTS else e["loc"]
    out = InitErrorDetails(type=e["type"], loc=loc, input=e["input"])
    if "ctx" in e:
        out["ctx"] = e["ctx"]
    return out


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"lr_g": 1e-3, ...}`` -> ``{"optim": {"lr_g": 1e-3}, ...}``; an unknown name stays on top to be refused."""
    nested: dict[str, Any] = {part: {} for part in PARTS}
    for k, v in flat.items():
        if k in PARTS and isinstance(v, BaseModel):
            v = dict(v)
        if k in PARTS and isinstance(v, dict):
            nested[k] = {**v, **nested[k]}
        elif k in PART_OF:
            nested[PART_OF[k]][k] = v
        else:
            nested[k] = v
    return nested


def _as_text(value: Any) -> Any:
    """A layer table as config files, flags and MLflow carry it: ``(256, 128)`` -> ``"256,128"``."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


PRESET_DIR = resources.files("ganforge") / "presets"  # package data (pyproject.toml ships it in the wheel)


class Preset(BaseModel):
    """One ``ganforge/presets/<name>.yaml``: a named set of overrides and why they differ from the defaults.

    The seed presets rebuild one write-up of ../shared/seeds layer for layer. Keras defaults the seeds rely on
    without printing them are spelled out: LeakyReLU alpha 0.3, BatchNormalization momentum 0.99 (PyTorch 0.01)
    and epsilon 1e-3, use_bias=True, glorot-uniform initialisation, Adam betas (0.9, 0.999), RMSprop rho 0.9;
    what a preset still does not copy is said in its ``why``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    why: str = Field(min_length=30, description="Where its values come from, and what is not copied.")
    from_seed: str | None = Field(
        None, pattern=r"^\d{3}$", description="The seed write-up (../shared/seeds/NNN_*.txt) it rebuilds. None: none."
    )
    image_size: int | None = Field(
        None, description="The side its layer tables are written for (the seed presets): a dataset of another side "
        "is refused while those tables are in force, since the networks would not be the seed's. None: any.",
    )
    tuned_for: tuple[int, ...] = Field(
        (), description="Sides its settings were chosen for (the recommended presets): another trains, with a note, "
        "since the width-agnostic networks build at any size but the settings were not chosen for it.",
    )
    every_image: bool = Field(
        False, description="The seed trains on every image it has (no validation hold-out): a dataset whose "
        "ingest held some out of training (--val-fraction above 0) trains with a warning naming the fix.",
    )
    overrides: dict[str, Any] = Field(
        description="TrainConfig fields by name, as in a config file: a whole run but its dataset."
    )

    @field_validator("overrides")
    @classmethod
    def _a_run(cls, v: dict[str, Any]) -> dict[str, Any]:
        per_run = sorted({"dataset", "preset"} & set(v))
        if per_run:
            raise ValueError(f"{', '.join(per_run)} cannot be preset (each run names its own)")
        # the same schema as every config: a preset that fails it would fail every run that names it
        flat = TrainConfig.model_validate({**v, "dataset": "(preset)"}).model_dump()
        return {k: flat[k] for k in v}  # as a config file writes them (a YAML 3 for a table is "3")


def preset_file(name: str) -> Traversable:
    """The package's file of preset ``name`` (it may not exist)."""
    return PRESET_DIR / f"{name}.yaml"


def _natural(name: str) -> list:
    """A sort key that puts recommended-28 before recommended-128."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def load_presets(where: Traversable = PRESET_DIR) -> dict[str, Preset]:
    """Every ``*.yaml`` preset file in ``where`` (the package's), by file name without ``.yaml``, in natural order.

    Raises:
        GanforgeError: a file that is not YAML or fails the preset schema or ``TrainConfig``'s (a broken install).
    """
    import yaml

    found = {}
    for entry in sorted(where.iterdir(), key=lambda e: _natural(e.name)):
        if not entry.name.endswith(".yaml"):
            continue
        try:
            # libyaml's safe loader when built in: the presets load on every CLI start (~3 ms instead of ~40)
            raw = yaml.load(entry.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            found[entry.name.removesuffix(".yaml")] = Preset.model_validate(raw)
        except (yaml.YAMLError, ValidationError) as exc:
            raise GanforgeError(f"preset file {entry.name}: {' '.join(str(exc).split())}") from None
    return found


PRESETS: dict[str, Preset] = load_presets()
SEED_PRESETS = {name: preset for name, preset in PRESETS.items() if preset.from_seed}

# Fields that make up a seed preset's network: while all of them are the preset's own, the networks are
# the seed's, and only the seed's image size builds them faithfully.
TABLE_FIELDS = ("g_channels", "d_channels", "g_strides", "d_strides", "kernel_size")


def check_preset_size(config: TrainConfig, image_size: int) -> None:
    """Refuse a dataset whose side differs from the one a seed preset's layer tables are written for.

    Raises:
        GanforgeError: one line naming the preset, both sizes and the fix.
    """
    preset = PRESETS.get(config.preset or "")
    if preset is None or preset.image_size in (None, image_size):
        return
    flat = config.model_dump()
    if all(flat[k] == preset.overrides.get(k) for k in TABLE_FIELDS):
        raise GanforgeError(
            f"preset {config.preset} builds the seed's {preset.image_size} px networks; the dataset has "
            f"{image_size} px images: re-ingest it with --image-size {preset.image_size}, or pick a preset for "
            f"{image_size} px"
        )


def preset_holdout_warning(config: TrainConfig, held_out: int, val_fraction: float, audit_held_out: int = 0,
                           audit_fraction: float = 0.0) -> str | None:
    """A warning when a preset whose seed trains on every image gets a dataset that holds some out, else None."""
    preset = PRESETS.get(config.preset or "")
    if preset is None or not preset.every_image or not (held_out or audit_held_out):
        return None
    seed = f"seed {preset.from_seed}" if preset.from_seed else "its source"
    parts = ([f"{held_out:,} as a val split (--val-fraction {val_fraction:g})"] if held_out else []) + \
        ([f"{audit_held_out:,} as the audit split (--audit-fraction {audit_fraction:g})"] if audit_held_out else [])
    flags = " ".join(f for f, n in (("--val-fraction 0", held_out), ("--audit-fraction 0", audit_held_out)) if n)
    return (f"preset {config.preset} trains on every image, as {seed} did, but this dataset's ingest held "
            f"{' and '.join(parts)} of them out; re-ingest with {flags} to train on all (the audit then calibrates "
            "on a leave-one-out baseline, or on the test split when asked: --baseline test)")


def preset_size_note(config: TrainConfig, image_size: int) -> str | None:
    """A note when a recommended preset trains images of a side it was not chosen for, else None."""
    preset = PRESETS.get(config.preset or "")
    if preset is None or not preset.tuned_for or image_size in preset.tuned_for:
        return None
    sides = "/".join(map(str, preset.tuned_for))
    return (f"preset {config.preset} was chosen for {sides} px images and these are {image_size} px: it trains, but "
            f"its settings were not measured at this size (see `ganforge presets` for the presets per size)")


def load_config_file(path: str | Path) -> dict:
    """Read a YAML or JSON config file into a dict of ``TrainConfig`` fields.

    Args:
        path: a ``.json``, ``.yaml`` or ``.yml`` file holding one mapping.

    Raises:
        GanforgeError: the file is missing, unreadable or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise GanforgeError(f"config file {p} does not exist; pass an existing YAML or JSON file to --config")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # parser errors carry line/column; keep them on one line
        raise GanforgeError(f"cannot parse config file {p}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise GanforgeError(f"config file {p} must hold a mapping of flag names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


def _layer(merged: dict, layer: dict, where: str) -> None:
    """Apply one precedence layer; setting epochs clears steps and vice versa (they are one choice).

    ``where`` starts the error message, e.g. "the flags give".

    Raises:
        GanforgeError: the layer sets both (one would silently be dropped).
    """
    if layer.get("epochs") is not None and layer.get("steps") is not None:
        raise GanforgeError(f"{where} both --epochs and --steps; keep one (the run's length is one choice)")
    for k, v in layer.items():
        if k == "epochs" and v is not None:
            merged.pop("steps", None)
        if k == "steps" and v is not None:
            merged.pop("epochs", None)
        merged[k] = v


def resolve_config(flags: dict, config_file: str | Path | None = None) -> TrainConfig:
    """Merge defaults < config file < preset < explicit flags into a validated ``TrainConfig``.

    A higher layer's ``--epochs`` or ``--steps`` replaces a lower layer's either one (``--steps 10`` on a
    preset that sets epochs trains 10 steps); one layer giving both is an error.

    Args:
        flags: explicitly given values by field name; ``None`` values count as not given.
        config_file: optional YAML/JSON file of field values (it may name a ``preset``).

    Raises:
        GanforgeError: unknown preset, unreadable config file, or --epochs and --steps in one layer.
        pydantic.ValidationError: a value is invalid (the CLI prints it as one line).
    """
    given = {k: v for k, v in flags.items() if v is not None}
    from_file = load_config_file(config_file) if config_file else {}
    preset_name = given.get("preset", from_file.get("preset"))
    merged: dict = {}
    _layer(merged, from_file, f"config file {config_file} gives")
    if preset_name is not None:
        if preset_name not in PRESETS:
            raise GanforgeError(f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
        _layer(merged, PRESETS[preset_name].overrides, f"preset {preset_name} gives")
    _layer(merged, given, "the flags give")
    if "model" not in merged:
        raise GanforgeError(f"no model given; pass --model ({', '.join(MODEL_NAMES)}) or a --preset")
    return TrainConfig(**merged)
