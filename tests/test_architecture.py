"""The architecture, read from the source (``ast``): no import cycles, the layers, a light top-level import, a public
API and configs that name it, and small modules.

The import graph has an edge for every ``import`` / ``from ... import`` anywhere in a module (inside functions too)
and every ``importlib.import_module("<constant>")``; ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module, else to ``pkg``. The implicit edge from a module to its parent packages is not counted; the lazy table of the
top-level package (``_EXPORTS``) and the old-path table of ``_compat`` (``MOVED``) are.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "lightning_compress"
SOURCE = ROOT / PACKAGE
MAX_LINES = 600
MAX_TOP_LEVEL_MODULES = 12


@dataclass(frozen=True)
class Import:
    """One import of ``target`` (a module of the package, or a third-party module) by ``source``."""

    source: str
    target: str
    raw: str  # the module as written (resolved if relative), before `known`
    path: Path
    line: int
    statement: str

    def __str__(self) -> str:
        served = f" (served by {self.target})" if self.target != self.raw else ""
        return f"{self.path.relative_to(ROOT)}:{self.line}: `{self.statement}` imports {self.raw}{served}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


def known(name: str) -> str:
    """``name`` if it is a module of the package, else its nearest enclosing module (a typo, an attribute path, an old
    module path served by ``_compat``: those resolve to what really runs)."""
    mods = modules()
    if name.split(".")[0] != PACKAGE or name in mods:
        return name
    if is_old_path(name):
        return f"{PACKAGE}._compat"
    while name not in mods and "." in name:
        name = name.rpartition(".")[0]
    return name


def is_old_path(name: str) -> bool:
    """``lightning_compress.<old>`` (or below it): a module path of the flat layout, served by ``_compat``."""
    parts = name.split(".")
    return len(parts) > 1 and parts[0] == PACKAGE and parts[1] in _compat_tables()["MOVED"]


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _source_line(path: Path, node: ast.AST) -> str:
    return " ".join(ast.get_source_segment(path.read_text(), node).split())


@cache
def imports() -> tuple[Import, ...]:
    """Every import statement (and constant ``importlib.import_module``) of every module of the package."""
    found: list[Import] = []
    mods = modules()
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(name, is_package, node.level, node.module)
                for alias in node.names:
                    child = f"{base}.{alias.name}"
                    targets.append(child if alias.name != "*" and (child in mods or is_old_path(child)) else base)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, (ast.Attribute, ast.Name))
                and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
                in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                targets = [node.args[0].value]
            for target in dict.fromkeys(targets):
                found.append(Import(name, known(target), target, path, node.lineno, _source_line(path, node)))
    return tuple(found)


@cache
def _compat_tables() -> dict[str, Any]:
    """The tables of ``_compat.py`` and ``__init__.py`` that name modules, read as literals from the source."""
    tables: dict[str, Any] = {}
    for path, names in ((SOURCE / "_compat.py", ("MOVED", "_ENTRY_POINTS")), (SOURCE / "__init__.py", ("_EXPORTS",))):
        for node in ast.parse(path.read_text()).body:
            target = node.target if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [None])[0]
            if isinstance(target, ast.Name) and target.id in names:
                tables[target.id] = ast.literal_eval(node.value)
                tables[f"{target.id} lines"] = {ast.literal_eval(k): k.lineno for k in node.value.keys}
    assert set(tables) >= {"MOVED", "_ENTRY_POINTS", "_EXPORTS"}, f"tables not found as literals: {set(tables)}"
    return tables


def table_imports() -> list[Import]:
    """The lazy imports by table: ``lightning_compress`` -> its ``_EXPORTS`` modules, ``_compat`` -> ``MOVED``."""
    tables = _compat_tables()
    rows = [(PACKAGE, "__init__.py", "_EXPORTS", name, new) for name, new in tables["_EXPORTS"].items()]
    rows += [(f"{PACKAGE}._compat", "_compat.py", "MOVED", old, new)
             for old, news in tables["MOVED"].items() for new in news]  # fmt: skip
    rows += [(f"{PACKAGE}._compat", "_compat.py", "_ENTRY_POINTS", old, new)
             for old, new in tables["_ENTRY_POINTS"].items()]  # fmt: skip
    return [Import(source, f"{PACKAGE}.{new}", f"{PACKAGE}.{new}", SOURCE / file, tables[f"{table} lines"][key],
                   f"{table}[{key!r}]") for source, file, table, key, new in rows]  # fmt: skip


def graph() -> dict[str, dict[str, Import]]:
    """``{module: {imported module of the package: one import that makes the edge}}``; no self-edges."""
    edges: dict[str, dict[str, Import]] = {name: {} for name in modules()}
    for imp in (*imports(), *table_imports()):
        if imp.target.split(".")[0] == PACKAGE and imp.target != imp.source:
            assert imp.target in edges, f"{imp}: no such module"
            edges[imp.source].setdefault(imp.target, imp)
    return edges


def find_cycles(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """One cycle through every strongly connected component of more than one module (Tarjan, then a path search)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges)))
    for v in sorted(edges):
        if v not in index:
            strongconnect(v)

    cycles = []
    for component in components:
        inside, start = set(component), component[0]
        paths = {start: [start]}
        frontier = [start]
        while frontier:  # breadth first inside the component: the shortest cycle through `start`
            nxt = []
            for v in frontier:
                for w in sorted(edges[v]):
                    if w == start:
                        cycles.append([*paths[v], start])
                        frontier, nxt = [], []
                        break
                    if w in inside and w not in paths:
                        paths[w] = [*paths[v], w]
                        nxt.append(w)
                else:
                    continue
                break
            frontier = nxt
    return cycles


def describe(cycle: list[str], edges: dict[str, dict[str, Import]]) -> str:
    lines = [" -> ".join(cycle)]
    lines += [f"    {edges[a][b].path.relative_to(ROOT)}:{edges[a][b].line}: `{edges[a][b].statement}` ({a} -> {b})"
              for a, b in zip(cycle, cycle[1:])]  # fmt: skip
    return "\n".join(lines)


def test_the_graph_sees_lazy_and_table_imports() -> None:
    """The graph builder itself: an import inside a function, a relative import and the tables give edges."""
    edges = graph()
    assert f"{PACKAGE}.core.target" in edges[f"{PACKAGE}._compat"]  # inside `_network_of`
    assert f"{PACKAGE}.cli.train" in edges[f"{PACKAGE}._compat"]  # MOVED["train"]
    assert f"{PACKAGE}.pruning.gradual_magnitude_pruning" in edges[PACKAGE]  # _EXPORTS
    assert f"{PACKAGE}._compat" in edges[PACKAGE]  # `from lightning_compress import _compat`: a module
    assert _absolute(f"{PACKAGE}.core.masks", False, 2, "pruning") == f"{PACKAGE}.pruning"
    assert _absolute(f"{PACKAGE}.core", True, 1, "masks") == f"{PACKAGE}.core.masks"
    toy = {"a": {"b": None}, "b": {"c": None}, "c": {"a": None, "d": None}, "d": {}}
    assert find_cycles(toy) == [["a", "b", "c", "a"]]  # type: ignore[arg-type]
    assert find_cycles({"a": {"b": None}, "b": {}}) == []  # type: ignore[dict-item]


# ------------------------------------------------------------------------------------------------------------ cycles
def test_no_import_cycles() -> None:
    edges = graph()
    cycles = find_cycles(edges)
    assert not cycles, "import cycles (lazy imports counted):\n" + "\n".join(describe(c, edges) for c in cycles)


# ----------------------------------------------------------------------------------------------------------- layering
def _subpackage(module: str) -> str | None:
    """``core`` for ``lightning_compress.core.masks``; None for the top-level package and its plain modules."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    path = SOURCE / parts[1]
    return parts[1] if path.is_dir() else None


def test_core_imports_no_other_subpackage() -> None:
    bad = [str(imp) for imp in imports()
           if _subpackage(imp.source) == "core" and imp.target.split(".")[0] == PACKAGE
           and _subpackage(imp.target) not in (None, "core")]  # fmt: skip
    assert not bad, "core must depend on no other subpackage:\n" + "\n".join(bad)


def test_only_cli_imports_cli_hydra_and_omegaconf() -> None:
    """``_compat`` names cli modules only as strings in its tables, which are no import statement."""
    bad = [str(imp) for imp in imports()
           if _subpackage(imp.source) != "cli"
           and (_subpackage(imp.target) == "cli" if imp.target.startswith(f"{PACKAGE}.")
                else imp.target.split(".")[0] in ("hydra", "omegaconf"))]  # fmt: skip
    assert not bad, "only lightning_compress/cli may import cli, hydra or omegaconf:\n" + "\n".join(bad)


def test_no_module_imports_the_top_level_package() -> None:
    """Library code imports from the module that defines a name, never through ``lightning_compress`` itself (that
    would load the lazy table and tie every module to the public API)."""
    bad = [str(imp) for imp in imports() if imp.target == PACKAGE]
    assert not bad, "imports of the top-level package (import the submodule instead):\n" + "\n".join(bad)


def test_no_module_imports_an_old_module_path() -> None:
    bad = [str(imp) for imp in imports() if is_old_path(imp.raw)]
    assert not bad, "library code imports deprecated module paths (served by _compat):\n" + "\n".join(bad)


# ------------------------------------------------------------------------------------------------- a light import
def test_importing_the_package_loads_no_heavy_module() -> None:
    code = (
        "import json, sys\n"
        f"import {PACKAGE}\n"
        "heavy = ('lightning_compress.cli', 'lightning_compress.bench', 'lightning_compress.analysis.plots',"
        " 'hydra', 'matplotlib', 'torch')\n"
        "print(json.dumps(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"`import {PACKAGE}` loads {loaded}"


# ------------------------------------------------------------------------------------------------------ public API
def test_every_public_name_resolves_inside_the_package() -> None:
    package = importlib.import_module(PACKAGE)
    bad = []
    for name in package.__all__:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the renamed names warn; test_compat checks that
            value = getattr(package, name)
        where = getattr(value, "__module__", None)
        if not (where == PACKAGE or str(where).startswith(f"{PACKAGE}.")):
            bad.append(f"{name}: {value!r} has __module__ {where!r}")
    assert not bad, "\n".join(bad)


def _config_targets() -> list[tuple[str, str]]:
    """``(config file, _target_)`` of every ``_target_`` under conf/ that names something of the package."""

    def walk(node: Any):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_target_" and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    found = []
    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found += [(str(path.relative_to(ROOT)), t) for t in walk(document) if t.split(".")[0] == PACKAGE]
    return found


def test_configs_name_targets_of_the_public_api() -> None:
    targets = _config_targets()
    assert len(targets) >= 10, targets  # the configs were found and read
    bad = []
    for config, target in targets:
        owner, _, name = target.rpartition(".")
        if owner not in (PACKAGE, f"{PACKAGE}.data", f"{PACKAGE}.models"):
            bad.append(f"{config}: {target} is not lightning_compress.<Name>, .data.<Name> or .models.<Name>")
            continue
        module = importlib.import_module(owner)
        if name.startswith("_") or name not in getattr(module, "__all__", ()):
            bad.append(f"{config}: {target}: {name!r} is not in {owner}.__all__")
        elif not hasattr(module, name):
            bad.append(f"{config}: {target}: {owner} has no attribute {name!r}")
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------------------------------------------------- sizes
def test_no_module_is_over_600_lines() -> None:
    long = {str(path.relative_to(ROOT)): n for path in modules().values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}  # fmt: skip
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_few_modules_directly_in_the_package() -> None:
    top = sorted(path.name for path in SOURCE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules directly in {PACKAGE}/: {top}"
