"""The import graph of ``src/ganforge`` has no cycles, and the library never reaches the repo root (only the
CLI imports the DAG in ``pipelines/``).

Built statically with ``ast`` from every ``import`` and ``from ... import`` at any depth (the lazy
ones inside functions too: a cycle hidden behind a lazy import is still a cycle, it only fails later).
Imports under ``if TYPE_CHECKING:`` are left out: they never run. Two graphs are checked:

* modules: ``a.b`` importing ``x.y.z`` depends on ``x.y.z`` and on every package above it that ``a.b``
  is not itself inside (importing ``x.y.z`` runs ``x/__init__.py`` and ``x/y/__init__.py`` first);
  ``from x.y import name`` depends on ``x.y`` itself, even from inside it, unless ``name`` is a submodule;
* top-level units: ``ganforge.<name>`` (a package with all its submodules, or a module), so that two
  layers leaning on each other through different submodules (audit <-> metrics) count as a cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = "ganforge"


def _modules(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package)."""
    out = {}
    for path in sorted((src / ROOT).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node outside ``if TYPE_CHECKING:`` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
            else:
                todo.append(child)


def _imported_names(tree: ast.AST, module: str, is_pkg: bool, modules) -> set[str]:
    """Dotted names of what this module imports (relative imports resolved): a module, or for
    ``from a import b`` the module ``a.b`` when there is one, else ``a``."""
    package = module if is_pkg else module.rpartition(".")[0]
    names = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                names.add(f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target)
    return names


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the ganforge modules importing it runs (see the module docstring)."""
    modules = _modules(src)
    graph: dict[str, set[str]] = {}
    for module, (path, is_pkg) in modules.items():
        deps = set()
        for name in _imported_names(ast.parse(path.read_text(), str(path)), module, is_pkg, modules):
            parts = name.split(".")
            if name in modules and name != module:
                deps.add(name)
            for i in range(1, len(parts)):
                above = ".".join(parts[:i])
                # the packages a module lives in are already being imported when it runs
                if above in modules and not (module == above or module.startswith(above + ".")):
                    deps.add(above)
        graph[module] = deps
    return graph


def unit_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between top-level units ``ganforge.<name>``; the root package itself is left out."""

    def unit(m: str) -> str | None:
        parts = m.split(".")
        return ".".join(parts[:2]) if len(parts) > 1 else None

    units: dict[str, set[str]] = defaultdict(set)
    for a, deps in graph.items():
        if unit(a) is None:
            continue
        units[unit(a)].update(unit(b) for b in deps if unit(b) not in (None, unit(a)))
    return dict(units)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


GRAPH = import_graph()


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / ROOT
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from ganforge.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def g():\n    if True:\n        from .. import a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ganforge.a\n"
                              "import ganforge.sub.b\n")
    (pkg / "sub" / "d.py").write_text("from ganforge.sub import b\nfrom ganforge.sub import THING\n")
    graph = import_graph(tmp_path)
    assert graph["ganforge.a"] == {"ganforge.sub", "ganforge.sub.b"}
    assert graph["ganforge.sub.b"] == {"ganforge.a"}  # its own package is not a dependency...
    assert graph["ganforge.sub.d"] == {"ganforge.sub", "ganforge.sub.b"}  # ...unless it takes a name from it
    assert graph["ganforge.c"] == {"ganforge.sub", "ganforge.sub.b"}  # TYPE_CHECKING imports never run
    assert find_cycle(graph) in (["ganforge.a", "ganforge.sub.b", "ganforge.a"],
                                 ["ganforge.sub.b", "ganforge.a", "ganforge.sub.b"])
    assert find_cycle(unit_graph(graph)) == ["ganforge.a", "ganforge.sub", "ganforge.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_no_module_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle between modules: " + " -> ".join(cycle)


def test_no_cycle_between_top_level_packages():
    cycle = find_cycle(unit_graph(GRAPH))
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle)


@pytest.mark.parametrize("lower, upper", [
    ("ganforge.checkpoints", "ganforge.inference"),  # checkpoints: written by training, read by all, below both
    ("ganforge.checkpoints", "ganforge.training"),
    ("ganforge.inference", "ganforge.training"),
    ("ganforge.inference", "ganforge.registry"),
    ("ganforge.pictures", "ganforge.inference"),  # pictures: drawn for training, tracking and the CLI, below all
    ("ganforge.tracking", "ganforge.inference"),
    ("ganforge.metrics", "ganforge.audit"),
    ("ganforge.training", "ganforge.evaluate"),
    ("ganforge.training", "ganforge.judgement"),
    ("ganforge.registry", "ganforge.evaluate"),
])
def test_lower_layers_do_not_import_upper_ones(lower, upper):
    units = unit_graph(GRAPH)
    seen, todo = set(), [lower]
    while todo:  # everything `lower` reaches, directly or not
        u = todo.pop()
        if u not in seen:
            seen.add(u)
            todo.extend(units.get(u, ()))
    assert upper not in seen, f"{lower} reaches {upper}"


# The DAG (pipelines/) and its components (components/) sit above the library: they import ganforge, and
# only the CLI, the entry point, imports them, handing the pipeline's builder to ganforge.pipeline.runner.
PIPELINE_IMPORTERS = {"ganforge.cli.pipeline"}


def test_the_library_never_imports_the_repo_root_or_edits_sys_path():
    offenders, importers = [], set()
    for module, (path, is_pkg) in _modules().items():
        tree = ast.parse(path.read_text())
        for name in _imported_names(tree, module, is_pkg, {}):
            if name.split(".")[0] in ("pipelines", "components"):
                importers.add(module)
                if module not in PIPELINE_IMPORTERS:
                    offenders.append(f"{module} imports {name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
                offenders.append(f"{module} uses sys.path (line {node.lineno})")
            # an import by name is one this graph cannot see
            if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in ("import_module", "__import__"):
                offenders.append(f"{module} imports by name (line {node.lineno})")
            # the library does not know where its source tree is (``Path(__file__).parents[3]``)
            if isinstance(node, ast.Attribute) and node.attr == "parents":
                offenders.append(f"{module} walks up its folders (line {node.lineno})")
    assert offenders == []
    assert importers == PIPELINE_IMPORTERS


# mlflow behind one boundary: runs, experiments and artifacts in tracking, registry calls in the registry's
# store (both through tracking.client); generator_model subclasses mlflow's PythonModel (MLflow runs it).
MLFLOW_MODULES = {"ganforge.tracking", "ganforge.registry.store", "ganforge.registry.generator_model"}


def test_only_the_tracking_boundary_imports_mlflow():
    importers, clients = set(), set()
    for module, (path, is_pkg) in _modules().items():
        tree = ast.parse(path.read_text())
        if any(name.split(".")[0] == "mlflow" for name in _imported_names(tree, module, is_pkg, {})):
            importers.add(module)
        if any(isinstance(n, ast.Call) and "MlflowClient" in ast.unparse(n.func) for n in ast.walk(tree)):
            clients.add(module)
    assert importers == MLFLOW_MODULES
    assert clients == {"ganforge.tracking"}  # one client factory


def test_the_bookkeeping_pipeline_steps_start_without_torch():
    """start-run, gate, register's bookkeeping and finish-run import ``ganforge.pipeline.steps`` in a fresh
    task process: it must not load torch (3 s of each light task's start before ``ganforge.names``)."""
    import subprocess
    import sys

    code = ("import sys; import ganforge.pipeline.steps, ganforge.pipeline.gate, ganforge.pipeline.runs; "
            "print(sorted(m for m in ('torch', 'torchvision', 'torcheval') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout
