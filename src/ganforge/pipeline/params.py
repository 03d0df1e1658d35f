"""What a pipeline run is asked to do (``PipelineParams``) and where it runs (``ClusterConfig``).

``PipelineParams``' fields are the KFP pipeline parameters, with the same names as the step flags
they feed (``dataset``, ``preset``, ``steps``, ``max_fid``, ...), so a value can be checked here at
compile or submit time instead of failing inside a pod an hour later. ``ClusterConfig`` is fixed at
compile time: the image, the GPU node pool and the Kubernetes Secrets the tasks read credentials from.
"""

from __future__ import annotations

import math
import os
import re
import types
import typing
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.json_schema import JsonDict

from ganforge.data.sources import SOURCE_NAMES
from ganforge.errors import GanforgeError
from ganforge.names import BACKBONE_NAMES, MODEL_NAMES

DEFAULT_IMAGE = "ganforge:latest"
IMAGE_ENV = "GANFORGE_IMAGE"  # the one setting that names the project image

# the backbone registry less custom, whose input contract no pipeline parameter carries
PIPELINE_BACKBONES = tuple(name for name in BACKBONE_NAMES if name != "custom")


# Marks a field that is also a ``TrainConfig`` field: the pipeline hands it to the train task, whose
# component passes it on to ``resolve_config`` by name (see ``train_flags``).
TRAIN_FLAG: JsonDict = {"train_flag": True}


class PipelineParams(BaseModel):
    """Every user choice of a pipeline run; each field is a KFP pipeline parameter of that name.

    The pipeline function (``pipelines/gan_pipeline.py``) writes these fields out as its parameters (KFP type,
    encoded default); tests hold its signature, and every component input a pipeline parameter feeds, equal
    to them. Exposing one more training flag: a field here marked ``TRAIN_FLAG``, and the parameter in the
    pipeline and in ``components/train.py``, passed on by each (tests name any that is missing).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    source: str = Field("digits", description=f"Ingest source: one of {', '.join(SOURCE_NAMES)}.")
    input: str | None = Field(None, description="The source's --input (a file or directory). None: its default.")
    dataset: str = Field(
        "/workspace/datasets/digits", description="Dataset URI written by ingest (local directory or s3://)."
    )
    image_size: int = Field(32, ge=8, le=1024, description="Square image side in pixels at ingest.")
    limit: int | None = Field(None, ge=1, description="At most this many images per split. None: all.")
    audit_fraction: float = Field(0.0, ge=0, lt=1, description="Share of the training images ingest carves out as "
                                  "split 'audit', the audit's baseline. 0: none (the audit leaves training images "
                                  "out one at a time, or uses a val split carved at ingest).")
    preset: str | None = Field("digits-tiny", description="Training preset. None: model/epochs/steps alone.", json_schema_extra=TRAIN_FLAG)
    model: str | None = Field(None, description=f"Model family: one of {', '.join(MODEL_NAMES)}. None: the preset's.", json_schema_extra=TRAIN_FLAG)
    epochs: int | None = Field(None, ge=1, description="Training epochs. None: the preset's (or --steps).", json_schema_extra=TRAIN_FLAG)
    steps: int | None = Field(None, ge=1, description="Generator updates. None: the preset's (or --epochs).", json_schema_extra=TRAIN_FLAG)
    seed: int = Field(0, ge=0, description="Seed of training, evaluation and audit latents.", json_schema_extra=TRAIN_FLAG)
    gpus: int = Field(0, ge=0, le=16, description="GPUs for training; more than 1 trains with torchrun DDP.")
    n: int = Field(1000, ge=2, description="Generated images scored by evaluate.")
    backbone: str = Field("pixels", description="Evaluate's feature backbone (pixels, inception-tf, ...).")
    backbone_weights: str | None = Field(None, description="Backbone weights file in the image. None: none.")
    audit_n: int = Field(500, ge=20, description="Generated images the memorisation audit checks (at least 20).")
    max_fid: float = Field(100.0, gt=0, description="Gate: register only when FID is at most this (its scale "
                           "depends on the backbone: the digits demo scores ~35 in pixels).")
    model_name: str = Field("ganforge-generator", min_length=1, description="Registered model name.")
    experiment: str = Field("ganforge", min_length=1, description="MLflow experiment of all runs.")
    work_dir: str = Field(
        "/workspace/runs", description="Directory kept across retries for checkpoints (a PVC on a cluster)."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _unset(cls, v, info):
        # run arguments come back from KFP encoded (see ``encode``): read them back as None
        return decode(info.field_name, v)

    @field_validator("source", "backbone")
    @classmethod
    def _known_name(cls, v: str, info) -> str:
        # checked here, not an hour later inside a pod
        names = {"source": SOURCE_NAMES, "backbone": PIPELINE_BACKBONES}[info.field_name]
        if v not in names:
            raise ValueError(f"unknown {info.field_name} {v!r}; choose one of {', '.join(names)}")
        return v

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        from ganforge.training.config import known_preset

        return known_preset(v)

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str | None) -> str | None:
        from ganforge.training.config import known_model

        return known_model(v)


    @field_validator("max_fid")
    @classmethod
    def _finite_gate(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"the FID gate must be a finite positive number, got {v}; pass e.g. 100")
        return v

    @model_validator(mode="after")
    def _trainable(self) -> PipelineParams:
        if self.preset is None and self.model is None:
            raise ValueError("give a preset or a model")
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give at most one of epochs or steps")
        return self

    def arguments(self) -> dict:
        """The KFP run arguments: every field, with unset (None) ones encoded (see ``encode``)."""
        return encode(self.model_dump())


# KFP cannot carry None through a pipeline run (kfp.local rejects None arguments and null defaults), so
# an optional parameter that is not set travels as "" (text) or 0 (numbers: none of them may be 0 when
# set). ``encode`` and ``decode`` are the one place that encoding lives; which parameters are optional,
# and text or number, is read from the field types.


def _kfp_type(name: str) -> type:
    """The type a parameter has in KFP: ``int | None`` -> int (str, int, float or bool)."""
    annotation = PipelineParams.model_fields[name].annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    assert isinstance(annotation, type), f"pipeline parameter {name} is not str, int, float or bool"
    return annotation


def is_optional(name: str) -> bool:
    """Whether the parameter ``name`` may be None (not set)."""
    return type(None) in typing.get_args(PipelineParams.model_fields[name].annotation)


def unset(name: str):
    """How the unset value of the optional parameter ``name`` travels through KFP: "" or 0."""
    kind = _kfp_type(name)
    if kind is bool:  # False is a value: an optional switch cannot be told from "off"
        raise TypeError(f"pipeline parameter {name}: KFP cannot carry an unset bool; give it a default")
    return kind()  # "", 0 or 0.0


def encode(values: dict) -> dict:
    """Pipeline values by name, with None (not set) as KFP carries it."""
    return {k: unset(k) if v is None else v for k, v in values.items()}


def decode(name: str, value):
    """A value of the parameter ``name`` as KFP carried it, with its unset encoding read back as None."""
    if name not in PipelineParams.model_fields or not is_optional(name) or isinstance(value, bool):
        return value
    return None if value == unset(name) else value


def train_flags() -> tuple[str, ...]:
    """The parameters that are ``TrainConfig`` fields, handed to the train task by name."""
    return tuple(k for k, f in PipelineParams.model_fields.items()
                 if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("train_flag"))


def check_given(values: dict) -> None:
    """Values a user typed: 0 is how KFP carries "unset", so ``--steps 0`` would silently mean "the preset's".

    Raises:
        GanforgeError: an optional number given as 0 or less, an optional text given as "".
    """
    for name, v in values.items():
        if name not in PipelineParams.model_fields or not is_optional(name) or v is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v <= unset(name):
            raise GanforgeError(f"{flag} {v} is not a positive count; leave {flag} out for its default")
        if v == unset(name):
            raise GanforgeError(f"{flag} is empty; leave {flag} out for its default")


class ClusterConfig(BaseModel):
    """Compile-time cluster wiring: image, GPU node pool, resources and credential Secrets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(default_factory=lambda: os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE,
                       description=f"Project image of every task (${IMAGE_ENV}, default {DEFAULT_IMAGE}).")
    gpu_type: str = Field("nvidia-l4", description="GPU model: the GPU node pool's label value (node selector).")
    gpu_resource: str = Field("nvidia.com/gpu", description="Kubernetes extended resource the GPUs are counted "
                              "in; KFP's driver uses the accelerator type as the limit's resource name.")
    gpu_node_label: str = Field("cloud.google.com/gke-accelerator", description="Node label of the GPU pool.")
    gpu_taint: str = Field("nvidia.com/gpu", description="Taint key on the GPU nodes (tolerated, NoSchedule).")
    cpu_request: str = Field("4", description="CPU request of the training task.")
    memory_request: str = Field("16Gi", description="Memory request of the training task.")
    shm_size: str = Field("8Gi", description="Size of the memory-backed /dev/shm of the training task.")
    s3_secret: str = Field("ganforge-s3", description="Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
                           "AWS_ENDPOINT_URL.")
    mlflow_secret: str = Field("ganforge-mlflow", description="Secret with MLFLOW_TRACKING_URI, "
                               "MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD.")
    workspace_pvc: str = Field("ganforge-workspace", description="PVC mounted at /workspace (checkpoints).")
    train_retries: int = Field(3, ge=0, le=10, description="Retries of the training task (preemption).")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field("IfNotPresent", description="Image pull policy.")

    @field_validator("image")
    @classmethod
    def _image_reference(cls, v: str) -> str:
        if not IMAGE_REF.fullmatch(v):
            raise ValueError(f"{v!r} is not an image reference; use [registry/]path[:tag][@sha256:digest] in "
                             "lowercase, e.g. registry.example.com/ml/ganforge:1.0")
        return v

    @field_validator("cpu_request", "memory_request", "shm_size")
    @classmethod
    def _positive_quantity(cls, v: str, info) -> str:
        cpu = info.field_name == "cpu_request"
        if not (CPU_QUANTITY if cpu else MEMORY_QUANTITY).fullmatch(v) or _number_part(v) <= 0:
            raise ValueError(f"{v!r} is not a positive {'CPU' if cpu else 'memory'} quantity; use e.g. "
                             f"{'4, 0.5 or 500m' if cpu else '16Gi or 512Mi'}")
        return v

    @field_validator("s3_secret", "mlflow_secret", "workspace_pvc")
    @classmethod
    def _object_name(cls, v: str) -> str:
        if len(v) > 253 or not DNS_SUBDOMAIN.fullmatch(v):
            raise ValueError(f"{v!r} is not a Kubernetes object name; use lowercase letters, digits, '-' and '.', "
                             "starting and ending with a letter or digit")
        return v

    @field_validator("gpu_type")
    @classmethod
    def _label_value(cls, v: str) -> str:
        if not v or len(v) > 63 or not LABEL_VALUE.fullmatch(v):
            raise ValueError(f"{v!r} is not a node label value (the GPU pool's, e.g. nvidia-l4); use 1-63 letters, "
                             "digits, '-', '_' or '.', starting and ending with a letter or digit")
        return v

    @field_validator("gpu_node_label", "gpu_taint", "gpu_resource")
    @classmethod
    def _qualified_name(cls, v: str) -> str:
        prefix, slash, name = v.rpartition("/")
        if (slash and not prefix) or (prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix))) or not name or len(name) > 63 \
                or not LABEL_VALUE.fullmatch(name):
            raise ValueError(f"{v!r} is not a Kubernetes key; use [domain/]name, e.g. nvidia.com/gpu")
        return v


# Kubernetes' own syntax (apimachinery validation): checked at compile time, not by the API server later
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
# the forms KFP's set_cpu_request / set_memory_request accept (a subset of Kubernetes quantities)
CPU_QUANTITY = re.compile(r"([0-9]*\.)?[0-9]+m?")
MEMORY_QUANTITY = re.compile(r"[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?")


def _number_part(quantity: str) -> float:
    """The number a quantity starts with: ``"500m"`` -> 500.0 (0.0 when it starts with none)."""
    digits = re.match(r"[0-9.]*", quantity)  # always matches, maybe nothing
    return float(digits.group() or 0) if digits else 0.0


# the distribution spec's reference grammar: [host[:port]/]path[:tag][@digest]
IMAGE_REF = re.compile(r"(?:[a-zA-Z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
                       r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?")


def check_params(values: dict) -> PipelineParams:
    """Validate run arguments given by name; unknown names, wrong types and ranges fail here.

    Raises:
        GanforgeError: one line naming each bad parameter and what it needs.
    """
    try:
        return PipelineParams(**values)
    except ValidationError as exc:
        raise GanforgeError("bad pipeline parameter: " + one_line(exc) + "; see `ganforge pipeline run --help`") from None


def check_cluster(values: dict) -> ClusterConfig:
    """``ClusterConfig`` from options given by name (None: default).

    Raises:
        GanforgeError: a bad option, as one line.
    """
    try:
        return ClusterConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise GanforgeError("bad cluster option: " + one_line(exc)) from None


def one_line(exc: ValidationError) -> str:
    """A pydantic error as one line: each bad field, what it needs and the value given."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "parameters"
        msg = err["msg"].removeprefix("Value error, ")
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) and \
            repr(err["input"]) not in msg else ""
        parts.append(f"{loc}: {msg}{got}")
    return "; ".join(parts)
