"""The layering holds: no import cycle between mmfuse's modules (imports inside functions
count too: a lazy import is still a dependency), no module over the size limit but the
listed ones, and nothing outside a registry switches on a registered name."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mmfuse"


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _holds_code(tree: ast.Module) -> bool:
    """Whether a module does more than re-export: anything but its docstring, imports and
    ``__all__`` (a function, a class, a constant, a statement)."""
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else None)
        if targets is not None and [getattr(t, "id", None) for t in targets] == ["__all__"]:
            continue
        return True
    return False


def _import_graph() -> dict[str, set[str]]:
    """Module -> the mmfuse modules it imports. Importing a package counts as a dependency on
    its ``__init__`` when that holds code; one that only re-exports is skipped (that would make
    every sub-module of a package that imports a sibling through ``from . import x`` look
    cyclic), and so is a module's own package (its ``__init__`` runs first anyway)."""
    files = {_module(p): p for p in SRC.rglob("*.py")}
    trees = {m: ast.parse(p.read_text(encoding="utf-8")) for m, p in files.items()}
    counted = {m for m, p in files.items() if p.name != "__init__.py" or _holds_code(trees[m])}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(trees[module]):
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
                if (name and name != module and name in counted
                        and not module.startswith(name + ".")):
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
    # packages whose __init__ holds code count (issue 28: a cycle hid behind them)
    assert "mmfuse.encoders.pretrained" in graph["mmfuse.encoders.featurizer"]
    assert _cycles(graph) == []


def test_init_modules_that_hold_code_are_seen():
    assert _holds_code(ast.parse('"""doc"""\nfrom .a import b\n__all__ = ["b"]\n')) is False
    assert _holds_code(ast.parse('from .a import b\nX = b()\n')) is True
    assert _holds_code(ast.parse('def f():\n    pass\n')) is True


#: The layers (ARCHITECTURE.md, "Layers"): module prefixes (relative to mmfuse) per room.
ROOMS = {
    "foundations": ("_constants", "_errors", "_registry", "_params", "_stats", "_io", "views",
                    "devices", "splits", "distributed", "privacy.audit"),
    "decoding": ("preprocess", "cache", "privacy.scrub", "data.datasets"),
    "encoders": ("encoders", "extract", "data.manifest", "data.inputs"),
    "fusion": ("fusion",),
    "model": ("privacy.dp", "encoder_choice", "estimator", "placement", "explain", "persist", "uncertainty",
              "predict", "evaluate", "features"),
    "surfaces": ("serving", "report", "cli", "__main__", "datasets", "privacy", "data", ""),
}
#: What each room may import besides itself.
MAY_IMPORT = {
    "foundations": set(),
    "decoding": {"foundations"},
    "encoders": {"foundations", "decoding"},
    "fusion": {"foundations"},
    "model": {"foundations", "decoding", "encoders", "fusion"},
    "surfaces": {"foundations", "decoding", "encoders", "fusion", "model"},
}
def _room(module: str) -> str | None:
    """The room of a module (the longest prefix that names it)."""
    rel = module[len("mmfuse."):] if module.startswith("mmfuse.") else ""
    best = None
    for name, prefixes in ROOMS.items():
        for p in prefixes:
            if rel == p or rel.startswith(p + ".") or (p == "" and rel == ""):
                if best is None or len(p) > len(best[1]):
                    best = (name, p)
    return best[0] if best else None

#: Imports across rooms that the layering does not allow, and why they stay (for now).
LAYER_EXCEPTIONS = {
    ("mmfuse.encoders.parts", "mmfuse.fusion.linear"):
        "the classifier of separate experts a|b (SplitExperts) of a candidate encoder",
}


def test_each_room_imports_only_the_rooms_below_it():
    graph = _import_graph()
    assert _room("mmfuse.fusion.late") == "fusion" and _room("mmfuse.privacy.dp") == "model"
    found, used = set(), set()
    for module, imported in graph.items():
        here = _room(module)
        assert here is not None, f"{module} is in no room of ROOMS"
        for other in imported:
            there = _room(other)
            if there == here or there in MAY_IMPORT[here]:
                continue
            if (module, other) in LAYER_EXCEPTIONS:
                used.add((module, other))
            else:
                found.add(f"{module} ({here}) imports {other} ({there})")
    assert sorted(found) == []
    assert used == set(LAYER_EXCEPTIONS)


def test_the_devices_sit_at_the_bottom():
    """The device helpers are used by the encoders and the heads; they import neither."""
    graph = _import_graph()
    assert graph["mmfuse.devices"] <= {"mmfuse._errors"}
    assert "mmfuse.devices" in graph["mmfuse.fusion.neural"]
    assert "mmfuse.devices" in graph["mmfuse.encoders.pretrained.runtime"]


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


#: Where a fusion strategy's registered name may appear as a string outside the module that
#: registers it (module, name) -> why. Anything else asks the registry for a capability
#: (``capabilities``, ``fusions_with``) instead of listing names.
FUSION_NAME_LITERALS = {
    **{("fusion/streamed.py", n): "STREAMED: each streamable strategy's out-of-core form "
       "(a registration capability once the streamed forms live beside the strategies)"
       for n in ("early", "late", "weighted", "seed-baseline", "stacking")},
    ("estimator.py", "late"): "MultimodalClassifier's default fusion",
    ("cli/model.py", "late"): "train's default --fusion",
    **{("evaluate/crossval.py", n): "DEFAULT_STRATEGIES: the evaluation's default rows, in order"
       for n in ("early", "weighted", "late", "stacking", "seed-baseline")},
    ("evaluate/dp.py", "early"): "a single modality under DP is DP early fusion of one view",
    **{("fusion/__init__.py", n): "the lazily imported classes' modules"
       for n in ("early", "weighted", "late", "stacking")},
    **{("fusion/candidates.py", n): "auto's default candidate list (its policy)"
       for n in ("early", "late", "seed-baseline", "stacking", "gmu", "attention", "lowrank")},
    ("fusion/auto.py", "late"): "auto's single-modality candidates are late fusion of one view",
    ("fusion/auto.py", "early"): "auto's fallback without inner folds: early fusion, equal weights",
    **{("fusion/neural/modules.py", n): "the torch module of each head, keyed by its name"
       for n in ("gmu", "attention", "lowrank")},
    ("privacy/dp.py", "early"): "the two DP strategies, named after the public ones they mirror",
}


def _string_literals(tree: ast.AST):
    """(line, value) of every string constant but docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef,
                                       ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings):
            yield node.lineno, node.value


def test_the_literal_check_sees_a_name_list():
    tree = ast.parse('"""late"""\nWEIGHTED = ("early", "late")\n')
    assert sorted(v for _, v in _string_literals(tree)) == ["early", "late"]


def test_fusion_names_appear_only_where_they_are_registered():
    """Capabilities (takes weights, meta level, explanation, DP, cost...) are declared at
    registration; a list of strategy names elsewhere is a capability nobody declared."""
    from mmfuse.fusion.base import FUSIONS, load_builtin

    load_builtin()
    package = Path(inspect.getfile(FUSIONS.entry("late").builder)).parents[1]  # the imported mmfuse
    home = {n: str(Path(inspect.getfile(FUSIONS.entry(n).builder)).relative_to(package))
            for n in FUSIONS.names()}
    assert home["late"] == "fusion/late.py"
    found, used = set(), set()
    for path in SRC.rglob("*.py"):
        module = str(path.relative_to(SRC))
        for line, value in _string_literals(ast.parse(path.read_text(encoding="utf-8"))):
            if value not in home or value in KEYWORDS or home[value] == module:
                continue
            if (module, value) in FUSION_NAME_LITERALS:
                used.add((module, value))
            else:
                found.add(f"{module}:{line} names the fusion strategy {value!r}")
    assert sorted(found) == []
    assert used == set(FUSION_NAME_LITERALS)  # a stale entry is an error too
