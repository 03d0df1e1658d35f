"""The ``ganforge`` typer app: one module per command group, each adding its commands with ``register``.

A new command group is one module with a ``register(app)`` and one entry in ``GROUPS``. Heavy imports
(torch, pyarrow, mlflow) happen inside commands so that ``ganforge --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

from ganforge.cli import data, eval, latent, pipeline, registry, train
from ganforge.cli.common import OneLineErrors

GROUPS = (data, train, latent, eval, registry, pipeline)  # the order of `ganforge --help`

app = typer.Typer(
    cls=OneLineErrors,
    name="ganforge",
    help="Train, evaluate, audit and ship GAN image generators: ingest -> train -> evaluate/audit -> register.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _group in GROUPS:
    _group.register(app)


def main() -> None:  # pragma: no cover - console entry for `python -m ganforge`
    sys.exit(app())
