"""collm_lib has no import cycle, and its imports go down docs/architecture.md's layers (LAYERS), but for the
knots listed in KNOWN_UPWARD; the configuration layer loads no torch.

Read statically (ast), without importing anything: every `import` and `from ... import` in every module of the
package (collm_lib/data/ too), at module level or inside a function, since an import made lazily to dodge a cycle is
still a cycle in the design. A package's __init__.py is the package's module (collm_lib/data/__init__.py is
`collm_lib.data`); `from .data.common import X` depends on `collm_lib.data.common`, not on the package, and
`from .pkg import name` on the submodule `name` where there is one. Imports by string (importlib) are not read.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "collm_lib"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: file} of every module under `root` (the package folder); a package's __init__.py is
    the package."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((root.name, *parts))] = path
    return found


def _known(name: str, modules: set[str]) -> str | None:
    """The module `name` names: itself, else its longest prefix that is a module (`a.b.attr` -> `a.b`)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The modules of `modules` that one import statement in `module` depends on (none outside them)."""
    if isinstance(node, ast.Import):
        return {target for alias in node.names if (target := _known(alias.name, modules))}
    if node.level:  # relative: from the module's package, one package up per dot after the first
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    if base not in modules and _known(base, modules) is None:
        return set()  # another package's module
    # `from pkg import name`: the submodule pkg.name where there is one, else pkg (or what of it is a module)
    return {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else _known(base, modules)
            for alias in node.names}


def import_graph(files: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """{module: the package's modules it imports anywhere in its file, at any depth}, self-imports left out."""
    files = module_files() if files is None else files
    modules = set(files)
    graph = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _targets(node, module, is_package, modules)
        graph[module] = edges - {module}
    return graph


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted (Tarjan's algorithm, iterative)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    for start in sorted(graph):
        if start in index:
            continue
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        work = [(start, iter(sorted(graph[start])))]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, as a path that ends where it starts."""
    start, inside = component[0], set(component)
    previous, frontier = {start: None}, [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & inside):
                if child == start:
                    path = [node]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in its component {component}")


def cycle_lines(graph: dict[str, set[str]], components: list[list[str]]) -> list[str]:
    """Each component as one of its cycles, "a -> b -> a", followed by its other members where it has more."""
    lines = []
    for component in components:
        cycle = _cycle(graph, component)
        rest = sorted(set(component) - set(cycle))
        lines.append(" -> ".join(cycle) + (f"  (in the same knot: {', '.join(rest)})" if rest else ""))
    return lines


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every import cycle of the graph, one line per strongly connected component (cycle_lines)."""
    return cycle_lines(graph, _components(graph))


def test_collm_lib_has_no_import_cycle():
    graph = import_graph()
    cycles = import_cycles(graph)
    assert not cycles, ("import cycles in collm_lib (module-level and function-level imports both count):\n"
                        + "\n".join(cycles))


def test_the_graph_holds_the_packages_imports():
    graph = import_graph()
    assert {"collm_lib.reproduce", "collm_lib.data", "collm_lib.data.common", "collm_lib.profiles"} <= set(graph)
    assert "collm_lib.profiles" in graph["collm_lib.reproduce"]  # from . import (..., profiles, ...)
    assert "collm_lib.data" in graph["collm_lib.reproduce"]  # from .data import Splits, load_dataset
    assert "collm_lib.data.common" in graph["collm_lib.runs"]  # from .data.common import ..., in a function
    assert "collm_lib.settings" in graph["collm_lib.data"]  # from .. import settings, in data/__init__.py
    assert "collm_lib.data.custom" in graph["collm_lib.data"]  # from . import custom: the submodule
    assert "collm_lib.io" in graph["collm_lib.data.common"]  # from ..io import ...
    assert {"collm_lib.data", "collm_lib.bundle"} <= graph["collm_lib.params"]  # absolute and relative, in functions
    assert sum(map(len, graph.values())) > 100


def test_relative_imports_resolve_to_modules(tmp_path):
    root = tmp_path / PACKAGE
    files = {"__init__.py": "", "settings.py": "import os\nimport collm_lib.io as io\n",
             "io.py": "from .data import common\n",  # the submodule, not the package
             "top.py": "from . import settings\nfrom .data.common import X\n\ndef f():\n    from .data import load\n",
             "data/__init__.py": "from .. import settings\nfrom .common import Y\n",
             "data/common.py": "from ..settings import Z\nfrom collm_lib import top\nfrom numpy import array\n"}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    graph = import_graph(module_files(root))
    assert graph == {"collm_lib": set(), "collm_lib.settings": {"collm_lib.io"},
                     "collm_lib.io": {"collm_lib.data.common"},
                     "collm_lib.top": {"collm_lib.settings", "collm_lib.data.common", "collm_lib.data"},
                     "collm_lib.data": {"collm_lib.settings", "collm_lib.data.common"},
                     "collm_lib.data.common": {"collm_lib.settings", "collm_lib.top"}}
    assert import_cycles(graph) == ["collm_lib.data -> collm_lib.data.common -> collm_lib.top -> collm_lib.data  "
                                    "(in the same knot: collm_lib.io, collm_lib.settings)"]


def test_cycles_are_found_and_spelled_out():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}}
    assert import_cycles(graph) == ["a -> b -> c -> a", "e -> f -> e"]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


# docs/architecture.md's groups as layers, lowest first: a module imports its own layer and those below it. A new
# module must be placed here. Data is `collm_lib.data` and its submodules.
LAYERS = {
    "foundation": "io hashing logs settings distributed faiss_gpu metrics paper",
    "configuration": "rules dataset_registry configs encoder_registry params profiles options config_sources",
    "data": "",
    "models": "collab lightgcn sasrec encoders popularity rates ctrl prompts llm model_source embedded fece model runs",
    "training": "train scoring stages pipeline baselines ranking",
    "retrieval": "retrieval rerank catalogue matching",
    "experiments": "sweep plan_runs table1 reproduce figure3 comparison replicates paper plots report numbers bundle",
    "entry points": "cli runner doctor",
}
# The imports that go up today: params, inside its checks, reads the bundles a replay names and the datasets (own
# folders included) a parameter names. The test fails on a new one, and on one that is gone (take it off this list).
KNOWN_UPWARD = {("params", "bundle"), ("params", "data")}


def layer_of(module: str) -> int:
    """The layer number of a collm_lib module (LAYERS); KeyError for a module placed nowhere."""
    short = module.removeprefix(f"{PACKAGE}.")
    if module == PACKAGE:
        return 0
    if short == "data" or short.startswith("data."):
        return list(LAYERS).index("data")
    for number, names in enumerate(LAYERS.values()):
        if short in names.split():
            return number
    raise KeyError(module)


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, imported) pairs, without the package prefix, where the imported module sits in a higher layer."""
    strip = lambda m: m.removeprefix(f"{PACKAGE}.")  # noqa: E731
    return {(strip(m), strip(t)) for m, targets in graph.items() for t in targets if layer_of(t) > layer_of(m)}


def test_every_module_has_a_layer():
    unplaced = [m for m in import_graph() if not _placed(m)]
    assert not unplaced, f"modules in no layer: {unplaced}; place each in tests/test_imports.py's LAYERS"


def _placed(module: str) -> bool:
    try:
        layer_of(module)
    except KeyError:
        return False
    return True


def test_imports_go_down_the_layers():
    found = upward_imports(import_graph())
    new = sorted(found - KNOWN_UPWARD)
    assert not new, ("imports that go up the layers (models never import experiments or entry points, ...): "
                     + ", ".join(f"{a} -> {b}" for a, b in new))
    gone = sorted(KNOWN_UPWARD - found)
    assert not gone, f"untied, take them off KNOWN_UPWARD: {gone}"


def test_upward_imports_are_found():
    graph = {"collm_lib.model": {"collm_lib.table1", "collm_lib.llm"}, "collm_lib.table1": {"collm_lib.model"},
             "collm_lib.llm": set()}
    assert upward_imports(graph) == {("model", "table1")}
    assert layer_of("collm_lib.data.custom") == layer_of("collm_lib.data") == 2


def test_the_configuration_layer_loads_no_torch():
    """Every configuration module (and what it imports: settings, the dataset registry) imports without torch, so
    configs, profiles, notebook parameters and `collm config`'s sources are read before, and without, any model."""
    import subprocess
    import sys

    modules = [f"{PACKAGE}.{m}" for m in LAYERS["configuration"].split()]
    code = (f"import importlib, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "[]", f"importing {modules} loaded torch"
