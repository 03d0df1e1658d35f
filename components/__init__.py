"""Thin KFP v2 components, one per pipeline step; each body calls one ``ganforge.pipeline.steps`` function.

Only the standard library and ``kfp`` are imported at module level; ganforge, torch and mlflow are
imported inside the bodies, which run in the project image (``ganforge.pipeline.params.DEFAULT_IMAGE``,
replaced per task by the pipeline's ``ClusterConfig.image``).
"""

from components.audit import audit
from components.evaluate import evaluate
from components.gate import gate
from components.ingest import ingest
from components.register import register
from components.runs import finish_run, start_run
from components.train import train

__all__ = ["audit", "evaluate", "finish_run", "gate", "ingest", "register", "start_run", "train"]
