"""Training engine: objectives, augmentation, EMA, the loop, checkpoints.

``train(config) -> TrainResult`` is the library twin of ``ganforge train``; ``resolve_config`` builds
the config from flags, a preset and a config file. Both are imported lazily so that importing a
submodule (``ganforge.training.losses``) does not pull in the whole engine.
"""

__all__ = ["PRESETS", "TrainConfig", "TrainResult", "resolve_config", "train"]


def __getattr__(name: str):
    if name in ("train", "TrainResult"):
        from ganforge.training import loop

        return getattr(loop, name)
    if name in ("TrainConfig", "PRESETS", "resolve_config"):
        from ganforge.training import config

        return getattr(config, name)
    raise AttributeError(f"module 'ganforge.training' has no attribute {name!r}")
