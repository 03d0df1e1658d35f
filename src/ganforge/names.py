"""The names of the registries that parameters and flags choose from, declared without importing torch.

The registries themselves (``ganforge.models.MODELS``, ``ganforge.metrics.features.EXTRACTORS``) build
networks and so need torch; each checks at import that its keys are these names, in this order. Code that
only lists or checks names (pipeline parameters, the light pipeline steps) imports them from here, so a
gate or a run-bookkeeping task starts without loading torch.
"""

MODEL_NAMES = ("mlp", "dcgan", "wgan-gp", "vae", "ae")
BACKBONE_NAMES = ("pixels", "inception-torchvision", "inception-tf", "custom")


def check_registry(kind: str, registry_keys, names: tuple[str, ...]) -> None:
    """Raise at import when a registry and its declared names drift apart (a programming error)."""
    if tuple(registry_keys) != names:
        raise RuntimeError(f"{kind} registry {tuple(registry_keys)} differs from ganforge.names {names}")

AUDIT_SPLIT = "audit"  # carved from the training images at ingest (--audit-fraction); never trained on
