"""The package's layering: no import cycles between eegbench modules, and the light modules stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import eegbench

PACKAGE = Path(eegbench.__file__).resolve().parent


def _module_graph() -> dict[str, set[str]]:
    """eegbench module → the eegbench modules it imports anywhere (top level or inside functions)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("eegbench",) + path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                     and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                     for n in ast.walk(block)}  # imports for annotations only are not runtime imports
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_eegbench_modules():
    """Lazy imports inside functions count too: a cycle hidden in a function is still a cycle."""
    graph = _module_graph()
    assert len(graph) > 40 and "eegbench.runner" in graph["eegbench.cli"] | {"eegbench.runner"}
    assert _cycles(graph) == []


def test_the_metric_interface_imports_no_metric_implementation():
    """``eegbench.metric`` (what a plugin subclasses) knows no implementation; scoring builds on it."""
    graph = _module_graph()
    assert not {m for m in graph["eegbench.metric"] if m.startswith("eegbench.metrics")}


def test_run_config_and_cli_parser_do_not_import_torch():
    code = ("import sys; import eegbench.run_config, eegbench.cli; eegbench.cli.build_parser(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_denoiser_protocol_declares_every_sample_keyword_the_methods_use():
    """``Denoiser.sample`` (what a method may call) names every keyword the built-in methods and the
    references pass, and the implementation takes exactly those."""
    import inspect

    from eegbench.backbones.denoiser import LatentDiffusionDenoiser
    from eegbench.backbones.protocol import Denoiser

    declared = list(inspect.signature(Denoiser.sample).parameters)
    assert declared == list(inspect.signature(LatentDiffusionDenoiser.sample).parameters)
    assert not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(Denoiser.sample).parameters.values())
    used = set()
    import eegbench_methods

    methods_dir = Path(eegbench_methods.__file__).resolve().parent
    sources = list(methods_dir.rglob("*.py")) + [PACKAGE / "references.py"]
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "sample" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("den", "denoiser"):
                used |= {k.arg for k in node.keywords if k.arg}
    assert used and used <= set(declared), sorted(used - set(declared))
