"""ganforge: train, evaluate, audit and ship GAN image generators."""

__version__ = "0.1.0"
