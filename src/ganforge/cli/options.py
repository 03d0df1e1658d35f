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

Finite means finite: every option whose field holds a float (``float``, ``float | None``, ``tuple[float, ...]``,
``float | Literal['auto']``) refuses nan and inf while the command line is parsed, before the command runs,
with one line that names the flag as typed and the field's rule (``--alpha must be a finite number in (0,
0.5), got nan``). The rule is read from the field's constraints (``gt``/``ge``/``lt``/``le``), else from the
words of the model's own validator. A model's other refusals become one line naming the typed flag too
(``Options.build``; ``one_line_validation_error``).
"""

from __future__ import annotations

import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Optional

import annotated_types
import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer on plain click
    from click.exceptions import ClickException  # type: ignore[assignment]  # click's own; the checker sees typer's copy

from ganforge.errors import GanforgeError

# deprecation lines of the command being run, printed by ``common.user_errors`` when it ends
PENDING_WARNINGS: list[str] = []


def flag(name: str) -> str:
    """``batch_size`` -> ``--batch-size``: the one spelling of a field as a flag."""
    return "--" + name.replace("_", "-")


class FlagError(ClickException):
    """A flag's value refused while the command line is parsed: one ``error:`` line, exit 2 (a usage error)."""

    exit_code = 2


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


def _unwrap(annotation) -> tuple[Any, list]:
    """``Annotated[float, Field(gt=0)]`` -> (float, [Gt(0)]): the bare type and its constraints."""
    metadata: list = []
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        for m in extra:
            metadata.extend(m.metadata if isinstance(m, FieldInfo) else [m])
    return annotation, metadata


def holds_float(annotation) -> bool:
    """Whether a field's values are or contain floats: ``float``, ``float | None``, ``tuple[float, ...]``,
    ``float | Literal['auto']``; the options whose nan and inf are refused."""
    annotation, _ = _unwrap(annotation)
    if annotation is float:
        return True
    return any(holds_float(a) for a in typing.get_args(annotation) if a is not Ellipsis) \
        if typing.get_origin(annotation) in (tuple, typing.Union, types.UnionType) else False


def _constraints(field: FieldInfo) -> list:
    """The field's own constraints, or those of a list's items (``tuple[Annotated[float, ...], ...]``)."""
    found = list(field.metadata)
    annotation = field.annotation
    if _is_optional(annotation):
        annotation = _args(annotation)[0]
    if typing.get_origin(annotation) is tuple:
        found += _unwrap(typing.get_args(annotation)[0])[1]
    return found


def _number(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def rule(field: FieldInfo) -> str:
    """A field's range from its constraints, as words: ``in (0, 0.5)``, ``> 0``, ``>= 2``; "" when it has none."""
    lo: object = None
    hi: object = None
    lo_open = hi_open = False
    for m in _constraints(field):
        if isinstance(m, annotated_types.Gt):
            lo, lo_open = m.gt, True
        elif isinstance(m, annotated_types.Ge):
            lo, lo_open = m.ge, False
        elif isinstance(m, annotated_types.Lt):
            hi, hi_open = m.lt, True
        elif isinstance(m, annotated_types.Le):
            hi, hi_open = m.le, False
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_number(lo)}, {_number(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_number(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_number(hi)}"
    return ""


def _validator_rule(model: type[BaseModel], name: str, value) -> str:
    """The range a model's own validator states for ``name`` (``must be in [0, 1), e.g. 0.3; got nan`` -> ``in
    [0, 1), e.g. 0.3``), for fields whose range is checked in code rather than declared; "" when none is said.

    Raises:
        GanforgeError: the validator's own one-line refusal of ``value`` (it names the flag and the rule).
    """
    try:
        model.model_validate({name: value})
    except GanforgeError:
        raise
    except ValidationError as exc:
        for err in exc.errors():
            if err["loc"][:1] != (name,):
                continue
            msg = err["msg"].removeprefix("Value error, ")
            if not msg.startswith("must be "):  # e.g. "blur nan is outside [0, 8]; ...": its interval, if any
                interval = re.search(r"[\[(]-?[\d.e+]+, -?[\d.e+]+[\])]", msg)
                return f"in {interval.group()}" if interval else ""
            said = msg.removeprefix("must be ")
            for end in ("; got", ", got"):
                said = said.split(end)[0]
            return said.removeprefix("a finite number").strip()
    except Exception:  # noqa: BLE001 - a rule is a courtesy; the refusal stands without it
        return ""
    return ""


def non_finite(spelled: str, model: type[BaseModel], name: str, given) -> str:
    """``--alpha must be a finite number in (0, 0.5), got nan``: the refusal of a nan or inf value."""
    field = model.model_fields[name]
    said = rule(field) or _validator_rule(model, name, given)
    what = "finite numbers" if is_list(field.annotation) else "a finite number"
    return f"{spelled} must be {what}{' ' + said if said else ''}, got {given}"


def _floats(value) -> list[float]:
    """The numbers in a typed value: a float, or the comma-separated parts of a text that parse as numbers."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    found = []
    for part in str(value).split(","):
        try:
            found.append(float(part))
        except ValueError:
            pass  # not a number at all: the model names what it wanted
    return found


def _finite_callback(model: type[BaseModel], name: str, spelled: str) -> Callable | None:
    """The parse-time check of a float option: nan and inf refused before the command runs."""
    if not holds_float(model.model_fields[name].annotation):
        return None

    def finite(value):
        if value is not None and not all(math.isfinite(x) for x in _floats(value)):
            try:
                said = non_finite(spelled, model, name, value)
            except GanforgeError as exc:  # the field's validator has its own words for it
                said = str(exc)
            raise FlagError(said)
        return value

    return finite


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
        panel: the help panel that lists this group's options (typer's ``rich_help_panel``). None: "Options".
    """

    def __init__(self, model: type[BaseModel], command: str, *, skip: Iterable[str] = (),
                 arguments: Iterable[str] = (), short: dict[str, str] | None = None,
                 envvar: dict[str, str] | None = None, notes: dict[str, str] | None = None,
                 aliases: dict[str, str] | None = None, required: bool = True, show_defaults: bool = True,
                 panel: str | None = None):
        self.model, self.command = model, command
        self.skip, self.arguments = frozenset(skip), tuple(arguments)
        self.short, self.envvar, self.notes = short or {}, envvar or {}, notes or {}
        self.aliases = aliases or {}
        self.required, self.show_defaults, self.panel = required, show_defaults, panel
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
                info = typer.Argument(default, help=text, show_default=False, rich_help_panel=self.panel,
                                      callback=_finite_callback(self.model, name, name.upper()))
            else:
                spelled = flag(field.alias or name)  # an alias where the field name would shadow (``json``)
                decls = [spelled, *([self.short[name]] if name in self.short else [])]
                if base is bool:
                    decls = [f"{spelled}/--no-{spelled[2:]}"]
                info = typer.Option(
                    default, *decls, help=text, envvar=self.envvar.get(name), metavar=metavar,
                    show_default=_shown_default(name, field, base) if self.show_defaults else False,
                    callback=_finite_callback(self.model, name, spelled), rich_help_panel=self.panel,
                )  # fmt: skip
            annotation = base if needed else Optional[base]
            out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation))
            if name in self.aliases:
                old = self.aliases[name]
                hidden = typer.Option(None, old, hidden=True, help=f"Deprecated: use {flag(name)}.",
                                      callback=_finite_callback(self.model, name, old))
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
        return self._pick(flags)[0]

    def _pick(self, flags: dict) -> tuple[dict[str, Any], dict[str, str]]:
        """``pick``, and the flags typed under their deprecated names (field -> old flag)."""
        given, typed = {}, {}
        for name in self.fields:
            value = flags.pop(name, None)
            if name in self.aliases:
                old, new = self.aliases[name], flag(name)
                old_value = flags.pop(self._alias_param(name), None)
                if old_value is not None:
                    if value is not None:
                        raise GanforgeError(f"give {new} only ({old} is its deprecated name)")
                    value, typed[name] = old_value, old
                    PENDING_WARNINGS.append(f"warning: {old} is deprecated for {self.command}; use {new}")
            if value is not None and is_list(self.model.model_fields[name].annotation):
                value = tuple(x.strip() for x in value.split(",") if x.strip())
            if value is not None:
                given[name] = value
        return given, typed

    def build(self, flags: dict):
        """``pick`` then the validated model.

        Raises:
            GanforgeError: the model refuses a value: one line naming each flag as typed.
        """
        given, typed = self._pick(flags)
        typed.update({name: name.upper() for name in self.arguments})  # an argument is named as in the usage line
        try:
            return self.model(**given)
        except ValidationError as exc:
            raise GanforgeError(one_line_validation_error(exc, self.model, typed)) from None


def one_line_validation_error(exc: ValidationError, model: type[BaseModel] | None = None,
                              typed: dict[str, str] | None = None) -> str:
    """Pydantic's multi-line report as one line: ``--flag-name: problem; ...``.

    ``typed`` names the flags given under a deprecated name (field -> ``--old``): the error names the flag
    the user typed. A nan or inf refused by a model (``allow_inf_nan=False``) is said with the field's rule
    when ``model`` is known.
    """
    parts = []
    errors = exc.errors()
    items_refused = {e["loc"][:1] for e in errors if len(e["loc"]) > 1}
    for err in errors:
        loc = err["loc"]
        if err["type"] == "too_short" and loc[:1] in items_refused:  # a list emptied by its refused items
            continue
        if not loc:
            parts.append(f"config: {err['msg']}")
            continue
        name = str(loc[0])
        spelled = (typed or {}).get(name) or flag(name)
        if model is not None and err["type"] == "finite_number" and name in model.model_fields:
            parts.append(non_finite(spelled, model, name, err.get("input")))
            continue
        where = "".join(f" (item {x + 1})" if isinstance(x, int) else f".{x}" for x in loc[1:])
        parts.append(f"{spelled}{where}: {err['msg']}")
    return "; ".join(parts)


def command(fn: Callable, *groups: Options) -> Callable:
    """Give ``fn(**flags)`` the signature of its option groups, in order (typer reads the signature)."""
    params = [p for g in groups for p in g.parameters()]
    names = [p.name for p in params]
    if len(names) != len(set(names)):
        raise ValueError(f"{fn.__name__}: two option groups share a field: {sorted(n for n in names if names.count(n) > 1)}")
    # Both set on the function object, which a checker does not follow: typer reads the signature, and
    # ganforge_fields says which field each parameter fills (read by tests that walk every option of every command).
    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    fields = {param: (g.model, name) for g in groups for name in g.fields
              for param in (name, *([g._alias_param(name)] if name in g.aliases else []))}
    fn.ganforge_fields = fields  # type: ignore[attr-defined]
    return fn
