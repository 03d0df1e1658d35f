"""The one option builder: a command's typer options made from pydantic models' fields.

A field's name is its flag (``batch_size`` -> ``--batch-size``), its type the flag's type (``int | None``
-> int, a ``Literal`` -> its values as the metavar, ``tuple[str, ...]`` -> a comma-separated list, ``bool``
-> ``--x/--no-x``), its description the help and its default the ``[default: ...]`` shown. Every option
defaults to "not given" (None), so the model, not the CLI, supplies defaults and validation: a value is
written once. A field without a default is a required option (or argument).

A command is a function taking ``**flags`` whose signature is the concatenation of its ``Options``
groups; ``Options.pick(flags)`` takes back the values a group owns. Old flag names that were renamed
stay for one release as hidden deprecated aliases (``aliases={"checkpoint": "--model"}``): they fill the
new field and leave a ``warning:`` line that the command prints when it finishes (a failing command keeps
its single ``error:`` line).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Optional

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ganforge.errors import GanforgeError

# deprecation lines of the command being run, printed by ``common.user_errors`` when it ends
PENDING_WARNINGS: list[str] = []


def flag(name: str) -> str:
    """``batch_size`` -> ``--batch-size``: the one spelling of a field as a flag."""
    return "--" + name.replace("_", "-")


def _args(annotation) -> list:
    return [a for a in typing.get_args(annotation) if a is not type(None)]


def _is_optional(annotation) -> bool:
    return isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union


def base_type(annotation) -> type:
    """``int | None`` -> int, ``Literal['a', 'b']`` -> str, ``tuple[str, ...]`` -> str: what typer parses."""
    if typing.get_origin(annotation) is typing.Literal:
        return type(typing.get_args(annotation)[0])
    if _is_optional(annotation):
        args = _args(annotation)
        # ``float | Literal['auto']``: typer takes the text and pydantic, which knows the union, parses it
        return base_type(args[0]) if len(args) == 1 else str
    if typing.get_origin(annotation) is tuple:
        return str  # given comma-separated, split by ``Options.pick``
    return annotation


def choices(annotation) -> tuple | None:
    """A ``Literal``'s values (through ``| None``), else None."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    if _is_optional(annotation):
        return choices(_args(annotation)[0])
    return None


def is_list(annotation) -> bool:
    """``tuple[str, ...]`` (optionally ``| None``): a comma-separated flag."""
    if _is_optional(annotation):
        return is_list(_args(annotation)[0])
    return typing.get_origin(annotation) is tuple


def _shown_default(name: str, field, base: type) -> str | bool:
    if field.default_factory is not None or field.default is PydanticUndefined:
        return False
    value = field.default
    if value is None:
        return False
    if base is bool:
        return name.replace("_", "-") if value else "no-" + name.replace("_", "-")
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


class Options:
    """The typer options of one pydantic model's fields, for one command.

    Args:
        model: the pydantic model whose fields become options.
        command: the command's name as typed (``evaluate``, ``pipeline submit``), for deprecation lines.
        skip: fields that are not options of this command.
        arguments: fields taken as positional arguments, in this order, before the options.
        short: extra short spellings, e.g. ``{"output": "-o"}``.
        envvar: environment variables a field may come from, e.g. ``{"token": "KFP_TOKEN"}``.
        notes: text appended to a field's description in the help.
        aliases: renamed flags kept for one release: ``{"checkpoint": "--model"}``.
        required: False makes every option optional (``train``: a config file or preset may give it).
        show_defaults: show each field's default in the help.
    """

    def __init__(self, model: type[BaseModel], command: str, *, skip: Iterable[str] = (),
                 arguments: Iterable[str] = (), short: dict[str, str] | None = None,
                 envvar: dict[str, str] | None = None, notes: dict[str, str] | None = None,
                 aliases: dict[str, str] | None = None, required: bool = True, show_defaults: bool = True):
        self.model, self.command = model, command
        self.skip, self.arguments = frozenset(skip), tuple(arguments)
        self.short, self.envvar, self.notes = short or {}, envvar or {}, notes or {}
        self.aliases = aliases or {}
        self.required, self.show_defaults = required, show_defaults
        unknown = (set(self.skip) | set(self.arguments) | set(self.short) | set(self.envvar) | set(self.notes)
                   | set(self.aliases)) - set(model.model_fields)
        if unknown:  # a typo here would silently drop a flag
            raise ValueError(f"{model.__name__} has no field(s) {sorted(unknown)}")

    @property
    def fields(self) -> list[str]:
        """This command's fields: the arguments first, then the options in the model's order."""
        rest = [n for n in self.model.model_fields if n not in self.skip and n not in self.arguments]
        return [*self.arguments, *rest]

    def parameters(self) -> list[inspect.Parameter]:
        """One ``inspect.Parameter`` per field (and per deprecated alias), for a command's signature."""
        out = []
        for name in self.fields:
            field = self.model.model_fields[name]
            base = base_type(field.annotation)
            text = " ".join(x for x in (field.description or "", self.notes.get(name, "")) if x)
            if is_list(field.annotation):
                text += " Comma-separated."
            needed = self.required and field.is_required()
            default = ... if needed else None
            values = choices(field.annotation)
            metavar = f"[{'|'.join(map(str, values))}]" if values else None
            if name in self.arguments:
                text += f" One of: {', '.join(map(str, values))}." if values else ""
                info = typer.Argument(default, help=text, show_default=False)
            else:
                spelled = flag(field.alias or name)  # an alias where the field name would shadow (``json``)
                decls = [spelled, *([self.short[name]] if name in self.short else [])]
                if base is bool:
                    decls = [f"{spelled}/--no-{spelled[2:]}"]
                info = typer.Option(
                    default, *decls, help=text, envvar=self.envvar.get(name), metavar=metavar,
                    show_default=_shown_default(name, field, base) if self.show_defaults else False,
                )  # fmt: skip
            annotation = base if needed else Optional[base]
            out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation))
            if name in self.aliases:
                old = self.aliases[name]
                hidden = typer.Option(None, old, hidden=True, help=f"Deprecated: use {flag(name)}.")
                out.append(inspect.Parameter(self._alias_param(name), inspect.Parameter.KEYWORD_ONLY,
                                             default=hidden, annotation=Optional[base]))
        return out

    @staticmethod
    def _alias_param(name: str) -> str:
        return f"deprecated_{name}"

    def pick(self, flags: dict) -> dict[str, Any]:
        """Remove this group's values from ``flags``; return the given ones (not None) by field name.

        A deprecated alias fills its field (and queues the warning); lists are split on commas.

        Raises:
            GanforgeError: a field given both by its name and by its deprecated alias.
        """
        given = {}
        for name in self.fields:
            value = flags.pop(name, None)
            if name in self.aliases:
                old, new = self.aliases[name], flag(name)
                old_value = flags.pop(self._alias_param(name), None)
                if old_value is not None:
                    if value is not None:
                        raise GanforgeError(f"give {new} only ({old} is its deprecated name)")
                    value = old_value
                    PENDING_WARNINGS.append(f"warning: {old} is deprecated for {self.command}; use {new}")
            if value is not None and is_list(self.model.model_fields[name].annotation):
                value = tuple(x.strip() for x in value.split(",") if x.strip())
            if value is not None:
                given[name] = value
        return given

    def build(self, flags: dict):
        """``pick`` then the validated model (pydantic errors become one ``error:`` line in the CLI)."""
        return self.model(**self.pick(flags))


def command(fn: Callable, *groups: Options) -> Callable:
    """Give ``fn(**flags)`` the signature of its option groups, in order (typer reads the signature)."""
    params = [p for g in groups for p in g.parameters()]
    names = [p.name for p in params]
    if len(names) != len(set(names)):
        raise ValueError(f"{fn.__name__}: two option groups share a field: {sorted(n for n in names if names.count(n) > 1)}")
    fn.__signature__ = inspect.Signature(params)
    return fn
