"""The ``ganforge`` typer app: one module per command group, each adding its commands with ``register``.

A new command group is one module with a ``register(app)`` and its commands' entries in ``COMMANDS``.
A command's module is imported when the command is asked for (``LazyCommands``), and heavy imports
(torch, pyarrow, mlflow) happen inside commands: ``ganforge promote`` or ``ganforge ingest`` start
without loading torch and torchvision (2-3 s of every start on a busy CPU); ``ganforge --help`` loads
every module to list their help.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import typer

from ganforge.cli.common import OneLineErrors

# command -> the module under ganforge.cli whose ``register`` adds it, in the order of `ganforge --help`
COMMANDS = {
    "ingest": "data", "train": "train", "presets": "train", "generate": "train", "encode": "latent",
    "reconstruct": "latent", "evaluate": "eval", "audit": "eval", "register": "registry", "promote": "registry",
    "rollback": "registry", "permissions": "registry", "datasets": "data", "runs": "registry",
    "pipeline": "pipeline",
}  # fmt: skip
GROUPS = tuple(dict.fromkeys(COMMANDS.values()))  # the command modules


def command_module(name: str) -> ModuleType:
    """``ganforge.cli.<name>``, imported by plain import statements (which the import-graph test sees)."""
    if name == "data":
        from ganforge.cli import data

        return data
    if name == "train":
        from ganforge.cli import train

        return train
    if name == "latent":
        from ganforge.cli import latent

        return latent
    if name == "eval":
        from ganforge.cli import eval

        return eval
    if name == "registry":
        from ganforge.cli import registry

        return registry
    if name == "pipeline":
        from ganforge.cli import pipeline

        return pipeline
    raise KeyError(f"no command module {name!r}")


def load_group(module_name: str) -> dict[str, Any]:
    """The click commands that ``ganforge.cli.<module_name>``'s ``register`` adds, by name."""
    sub = typer.Typer()
    command_module(module_name).register(sub)
    return dict(typer.main.get_group(sub).commands)


class LazyCommands(OneLineErrors):
    """The top-level group: each command's module is imported the first time the command is looked up."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self._add(COMMANDS[cmd_name])
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        word = args[0] if args else ""
        if word and not word.startswith("-") and word not in COMMANDS and word not in self.commands:
            # a mistyped command: typer suggests close names from the loaded ones, so load them all (the
            # error path only)
            for module in GROUPS:
                self._add(module)
        return super().resolve_command(ctx, args)

    def _add(self, module: str) -> None:
        for name, cmd in load_group(module).items():
            self.commands.setdefault(name, cmd)


def _root() -> None:
    """A no-op callback: typer builds a group only for an app with one, or with commands of its own."""


app = typer.Typer(
    cls=LazyCommands,
    name="ganforge",
    help="Train, evaluate, audit and ship GAN image generators: ingest -> train -> evaluate/audit -> register.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    callback=_root,
)


def main() -> None:  # pragma: no cover - console entry for `python -m ganforge`
    sys.exit(app())
