"""The layers import downwards only: fileio < data < models < training < analysis < the CLIs (cli/ and its two
wrappers run_analysis.py, train.py), and no module imports a project module inside a function (the usual way to
hide an import cycle)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"fileio": 0, "data": 1, "models": 2, "training": 3, "analysis": 4, "cli": 5, "run_analysis": 5, "train": 5}
PACKAGES = ("fileio", "data", "models", "training", "analysis", "cli")
MODULES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")) \
    + [ROOT / "run_analysis.py", ROOT / "train.py"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(node, importer: str, is_package: bool) -> list[str]:
    """Absolute names of the modules an Import / ImportFrom node reads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        return [node.module]
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return [".".join(base + ([node.module] if node.module else []))]


def project_imports(source: str, name: str, is_package: bool = False):
    """(line, imported module, inside a function?) for every import of a project module in the
    ``source`` of module ``name``."""
    tree = ast.parse(source)
    nested = {id(sub) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for sub in ast.walk(fn) if isinstance(sub, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in imported_modules(node, name, is_package):
                if target.split(".")[0] in LAYERS:
                    yield node.lineno, target, id(node) in nested


def layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down_the_layers_at_module_level(path):
    name = module_name(path)
    imports = list(project_imports(path.read_text(), name, path.name == "__init__.py"))
    upward = [f"line {line}: {target}" for line, target, _ in imports if layer(target) > layer(name)]
    assert not upward, (f"{name} (layer {name.split('.')[0]}) imports a higher layer: {upward}; the order is "
                        f"fileio < data < models < training < analysis < cli (run_analysis.py / train.py)")
    nested = [f"line {line}: {target}" for line, target, inside in imports if inside]
    assert not nested, f"{name} imports project modules inside functions: {nested}; import them at the top"


def test_the_checker_sees_upward_relative_and_nested_imports():
    source = ("from fileio import atomic\nfrom .labels import x\nimport analysis.costs.layers\nimport torch\n\n"
              "def f():\n    from models import presets\n")
    found = list(project_imports(source, "data.example"))
    assert found == [(1, "fileio", False), (2, "data.labels", False), (3, "analysis.costs.layers", False),
                     (7, "models", True)]
    assert list(project_imports("from . import build\n", "models", is_package=True)) == [(1, "models", False)]
    assert [layer(t) for _, t, _ in found] == [0, 1, 4, 2]
