"""``IngestConfig``: how a source becomes a dataset; field names = ``ganforge ingest`` flags = KFP parameters.

Each field's description gives its unit and what ``None`` means; the CLI's help text is built from
the same descriptions so that code, CLI and docs say one thing. The source names are the registry's
(``ganforge.data.sources.SOURCES``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ganforge.data.sources import SOURCE_NAMES

if TYPE_CHECKING:  # a Literal built from a tuple is a run-time value: a checker sees a name, pydantic checks it
    SourceName = str
else:
    SourceName = Literal[SOURCE_NAMES]  # the registry's names, whatever they are


class IngestConfig(BaseModel):
    """How a source becomes a versioned Parquet dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: SourceName = Field(description="Where the images come from.")
    output: str = Field(description="Dataset location: a local directory or s3://bucket/prefix.")
    input: str | None = Field(
        None,
        description="The source's files: torchvision root (mnist, fashion-mnist, kmnist), the HDF5 file "
        "(galaxy10), the image directory (folder), a .npy bitmap file or a folder of them (quickdraw), the "
        "cifar-10-batches-bin folder (cifar10) or the folder with list_attr_celeba.txt (celeba). None: the "
        "source's default location.",
    )
    download: bool = Field(False, description="Let torchvision/astroNN download missing files (needs network).")
    image_size: int | None = Field(
        None, description="Output side in pixels (square, antialiased resize). None: keep the source's size."
    )
    channels: Literal[1, 3] | None = Field(None, description="1 (grey) or 3 (RGB). None: keep the source's.")
    aspect: Literal["crop", "pad"] = Field(
        "crop", description="Non-square images: centre-crop to a square, or pad with black to keep the whole image."
    )
    limit: int | None = Field(
        None, description="Keep at most this many images per split (a seeded random subset). None: all."
    )
    classes: tuple[str, ...] | None = Field(
        None, description="Keep only these classes (names or label ids); labels are renumbered 0..K-1. None: all."
    )
    split_seed: int = Field(0, description="Seed for the train/val split of sources without one, and for --limit.")
    val_fraction: float = Field(
        0.1, description="Fraction of images held out as split 'val' when the source has no split (0 = none)."
    )
    audit_fraction: float = Field(
        0.0, description="Fraction of the training images carved out at random (seeded by --split-seed) as split "
        "'audit': never trained on, drawn from the training source itself, the audit's default baseline (0 = none).",
    )
    shard_size_mb: float = Field(64.0, description="Target size of one Parquet shard, in MB.")
    overwrite: bool = Field(False, description="Replace an existing dataset at --output even if it is up to date.")

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= 4096:
            raise ValueError(f"must be a positive number of pixels up to 4096 (e.g. 64), got {v}")
        return v

    @field_validator("limit")
    @classmethod
    def _positive_limit(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"must be at least 1 (or leave it out for all images), got {v}")
        return v

    @field_validator("val_fraction", "audit_fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError(f"must be in [0, 1), e.g. 0.1, got {v}")
        return v

    @field_validator("shard_size_mb")
    @classmethod
    def _shard_size(cls, v: float) -> float:
        if not 0 < v < math.inf:  # also refuses nan
            raise ValueError(f"must be a finite number above 0, e.g. 64; got {v}")
        return v

    def inputs(self) -> dict:
        """What identifies the result: everything but where it goes and whether to overwrite."""
        out = self.model_dump(mode="json", exclude={"output", "overwrite", "download", "shard_size_mb"})
        if not self.audit_fraction:  # added in 0.3: leaving it out keeps the inputs key of every earlier ingest
            out.pop("audit_fraction")
        return out
