"""What every ganforge component shares: the project image and no installs at run time."""

from kfp import dsl

IMAGE = "ganforge:latest"  # ganforge.pipeline.params.DEFAULT_IMAGE; the pipeline sets the real one per task


def component(fn):
    """``dsl.component`` in the project image, which already holds kfp, ganforge and its dependencies."""
    return dsl.component(fn, base_image=IMAGE, install_kfp_package=False)
