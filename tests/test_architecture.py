"""The layering holds: no import cycle between mmfuse's modules (imports inside functions
count too: a lazy import is still a dependency), no module over the size limit but the
listed ones, and nothing outside a registry switches on a registered name."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mmfuse"


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the mmfuse modules it imports. A package's ``__init__`` only re-exports, so
    importing it is not counted as a dependency on it (that would make every sub-module of a
    package that imports a sibling through ``from . import x`` look cyclic)."""
    files = {_module(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                         for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != module and files[name].name != "__init__.py":
                    graph[module].add(name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_inside_mmfuse():
    graph = _import_graph()
    assert "mmfuse.encoders.featurizer" in graph["mmfuse.estimator"]
    assert _cycles(graph) == []


#: Modules may have at most this many lines...
MAX_LINES = 500
#: ...but for these (module -> why); none today.
LONG_MODULES: dict[str, str] = {}


def test_no_module_over_the_size_limit():
    sizes = {str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines())
             for p in SRC.rglob("*.py")}
    assert set(LONG_MODULES) <= set(sizes)  # a stale entry is an error too
    over = {m: n for m, n in sizes.items() if n > MAX_LINES and m not in LONG_MODULES}
    assert over == {}


#: Where a registered name may still be compared against, and why.
NAME_SWITCHES = {
    ("fusion/auto.py", "weighted"): "auto's candidate policy (issue 10)",
    ("privacy/dp.py", "early"): "the two DP strategies, named after the public ones they mirror",
    ("cli/model.py", "tfidf"): "train's documented swap of tfidf for its variant tfidf-hashed",
    ("cli/model.py", "tfidf-hashed"): "the same swap",
}
#: Registered names that are also keywords elsewhere: "auto" (device, encoder choice),
#: "tabular" (a modality and a dataset metadata key).
KEYWORDS = {"auto", "tabular"}


def _registered_names() -> dict[str, str]:
    from mmfuse.data.datasets import list_datasets
    from mmfuse.encoders import list_encoders
    from mmfuse.fusion import list_fusions

    names = {d["name"]: "dataset" for d in list_datasets()}
    names.update({e["name"]: "encoder" for e in list_encoders()})
    names.update({f["name"]: "fusion strategy" for f in list_fusions()})
    return {n: kind for n, kind in names.items() if n not in KEYWORDS}


def _compared_strings(tree: ast.AST):
    """(line, string) of every string constant an ``==``/``!=``/``in`` test compares with."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for c in [node.left, *node.comparators]:
                elts = c.elts if isinstance(c, (ast.Tuple, ast.List, ast.Set)) else [c]
                for e in elts:
                    if isinstance(e, ast.Constant) and isinstance(e.value, str):
                        yield node.lineno, e.value


def test_the_name_check_sees_a_switch():
    tree = ast.parse('if name == "stacking" or kind in ("early", "x"):\n    pass\n')
    assert sorted(s for _, s in _compared_strings(tree)) == ["early", "stacking", "x"]


def test_nothing_outside_a_registry_switches_on_registered_names():
    """Strategies, encoders and datasets declare their properties where they are
    registered; code elsewhere asks the registry instead of testing names."""
    names = _registered_names()
    assert {"late", "hog", "tuxpaint"} <= set(names)
    found = set()
    for path in SRC.rglob("*.py"):
        module = str(path.relative_to(SRC))
        for line, value in _compared_strings(ast.parse(path.read_text(encoding="utf-8"))):
            if value in names and (module, value) not in NAME_SWITCHES:
                found.add(f"{module}:{line} tests the {names[value]} name {value!r}")
    assert sorted(found) == []


#: The extraction and preparation functions, and the only modules that may call them: the
#: featurizer (every path from raw columns to views goes through it), the extraction
#: module itself, and the encoders' base class (``prepare_all`` and its own ``fit``).
EXTRACTION = {"extract_features", "iter_features", "prepare_all"}
MAY_EXTRACT = {"encoders/featurizer.py", "extract.py", "encoders/base.py"}


def _extraction_calls(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """(line, name) of every call of :data:`EXTRACTION` in a module of ``package``: a name
    imported from ``mmfuse.extract``, an attribute of that module, or any ``.prepare_all``
    method call (an ``extract_features`` attribute of something else, e.g. a torch model,
    is not ours)."""
    names: dict[str, str] = {}    # local name -> function of mmfuse.extract
    modules: set[str] = set()     # local names of the mmfuse.extract module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = (".".join(parts[:len(parts) - node.level + 1]
                             + ([node.module] if node.module else []))
                    if node.level else node.module or "")
            for a in node.names:
                if base == "mmfuse.extract" and a.name in EXTRACTION:
                    names[a.asname or a.name] = a.name
                elif base == "mmfuse" and a.name == "extract":
                    modules.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "mmfuse.extract":
                    modules.add(a.asname or a.name)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in names:
            found.append((node.lineno, names[func.id]))
        elif isinstance(func, ast.Attribute) and func.attr in EXTRACTION and (
                func.attr == "prepare_all" or ast.unparse(func.value) in modules):
            found.append((node.lineno, func.attr))
    return found


def test_only_the_featurizer_extracts_and_prepares():
    """Every path from raw columns to views (fit, predict, evaluation's fixed and
    candidate encoders, explain, the feature store, the service) goes through the
    featurizer: no other module calls the extraction or preparation functions."""
    snippet = ("from ..extract import extract_features as ef\nfrom .. import extract\n"
               "import mmfuse.extract as mx\nef(e, s)\nextract.iter_features(e, s)\n"
               "mx.extract_features(e, s)\nenc.prepare_all(s)\nself.net.extract_features(x)\n")
    assert sorted(n for _, n in _extraction_calls(ast.parse(snippet), "mmfuse.features")) == [
        "extract_features", "extract_features", "iter_features", "prepare_all"]
    found = []
    for path in SRC.rglob("*.py"):
        module = path.relative_to(SRC).as_posix()
        if module in MAY_EXTRACT:
            continue
        package = _module(path) if path.name == "__init__.py" else \
            _module(path).rpartition(".")[0]
        found += [f"{module}:{line} calls {name}" for line, name in
                  _extraction_calls(ast.parse(path.read_text(encoding="utf-8")), package)]
    assert sorted(found) == []
