"""Model families: the network spec (``spec.py``: every network setting, declared once) and the registry of
families with their builders (``registry.py``, which states the networks' common forward signatures)."""

from ganforge.models.registry import (
    MODELS,
    ModelFamily,
    Networks,
    build_discriminator,
    build_encoder,
    build_generator,
    check_buildable,
    count_params,
)
from ganforge.models.spec import ModelSpec, NetworkSpec

__all__ = ["MODELS", "ModelFamily", "ModelSpec", "Networks", "NetworkSpec", "build_discriminator", "build_encoder",
           "build_generator", "check_buildable", "count_params"]
