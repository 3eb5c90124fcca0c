"""No import circle anywhere in colab_tts: the modules import in one direction (read from their source)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "colab_tts"


def _module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {_module_name(p, root): p for p in root.rglob("*.py")}


def _dynamic_targets(node: ast.Call, name: str, known: set[str]) -> list[str]:
    """``importlib.import_module(...)`` / ``__import__(...)`` by a literal name, or by an f-string: every module
    its literal prefix can name (``f"colab_tts.deploy.{x}"``: each module directly in colab_tts.deploy)."""
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if called not in ("import_module", "__import__") or not node.args:
        return []
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        prefix = arg.values[0].value
        return [m for m in known if m.startswith(prefix) and "." not in m[len(prefix):] and m != name]
    return []


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every colab_tts module ``path`` imports, at module level or inside a function (``import x``, ``from``, and
    ``importlib.import_module`` / ``__import__`` by a name its source spells)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            targets = _dynamic_targets(node, name, known)
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                where = ".".join(base + ([node.module] if node.module else []))
            else:
                where = node.module or ""
            targets = [where] + [f"{where}.{alias.name}" for alias in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = _modules(root)
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _cut(graph, component):
    """One import of the circle, to name in the failure: an edge inside the component."""
    return [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component]


def test_no_module_of_colab_tts_is_in_an_import_circle():
    graph = import_graph()
    circles = cycles({k: {d for d in v if not k.startswith(d + ".") and not d.startswith(k + ".")}
                      for k, v in graph.items()})
    assert not circles, "import circles (module -> module it imports):\n" + "\n".join(
        f"  {' / '.join(c)}: {'; '.join(_cut(graph, c))}" for c in circles)


def test_the_reader_finds_a_circle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "colab_tts"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n    return a\nthing = 1\n")
    (pkg / "c.py").write_text("import colab_tts.a\n")
    modules = _modules(pkg)
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    assert "colab_tts.a" in graph["colab_tts.b"] and graph["colab_tts.c"] == {"colab_tts.a"}
    assert cycles(graph) == [["colab_tts.a", "colab_tts.b"]]


def test_the_reader_finds_a_circle_through_import_module(tmp_path):
    pkg = tmp_path / "colab_tts"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import importlib\ndef f():\n    return importlib.import_module('colab_tts.b')\n")
    (pkg / "b.py").write_text("def g():\n    return __import__('colab_tts.a')\n")
    (pkg / "run.py").write_text("import importlib\nNAMES = {'x': 'x'}\n"
                                "def h(k):\n    return importlib.import_module(f'colab_tts.sub.{NAMES[k]}')\n")
    (pkg / "sub" / "x.py").write_text("def i():\n    from ..run import h\n    return h\n")
    modules = _modules(pkg)
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    assert graph["colab_tts.run"] == {"colab_tts.sub.x"}
    assert cycles(graph) == [["colab_tts.a", "colab_tts.b"], ["colab_tts.run", "colab_tts.sub.x"]]


@pytest.mark.parametrize("name", ["colab_tts.models", "colab_tts.hardware", "colab_tts.quantization",
                                  "colab_tts.vllm_versions", "colab_tts.vllm_plan", "colab_tts.planner",
                                  "colab_tts.kv_fit"])
def test_the_planner_layers_import_downward_only(name):
    # GPU catalog and model spec (hardware's advice reads the covered models' sizes) -> weight formats ->
    # memory budget -> plan -> fit -> the public face and the systems built on it
    order = ["colab_tts.units", "colab_tts.cited", "colab_tts.dtypes", "colab_tts.models", "colab_tts.hardware",
             "colab_tts.vllm_versions", "colab_tts.quantization", "colab_tts.vllm_plan", "colab_tts.planner",
             "colab_tts.kv_fit", "colab_tts.kv_cache", "colab_tts.systems"]
    graph = import_graph()
    above = set(order[order.index(name) + 1:])
    assert not graph[name] & above, f"{name} imports a layer above it: {sorted(graph[name] & above)}"


def test_no_test_imports_a_conftest():
    """tests/ and notebooks/ each have a conftest.py, both imported as the module ``conftest``: a test that imports
    from it gets whichever pytest loaded last (`pytest tests notebooks` failed to collect two test files)."""
    import ast
    from pathlib import Path

    offenders = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if "conftest" in names:
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"import shared test code from a module of its own, not conftest: {offenders}"
