"""The MLflow Model Registry for ganforge generators: register, resolve, compare, promote, roll back.

Modules: ``store`` (client, lock, ``models:/``/``runs:/`` resolution and cache), ``evidence`` (a run's
evaluation and audit as tags), ``versions`` (register), ``aliases`` (promote with its gate and
history, rollback), ``compare`` and ``generator_model`` (the pyfunc, loaded by MLflow from its source file). Unlike the training engine,
this package talks to MLflow itself: the registry *is* MLflow.
"""

from ganforge.registry.aliases import promote, rollback
from ganforge.registry.compare import compare_runs, format_table
from ganforge.registry.store import DEFAULT_NAME, resolve_model_uri
from ganforge.registry.versions import register

__all__ = ["DEFAULT_NAME", "compare_runs", "format_table", "promote", "register", "resolve_model_uri", "rollback"]
