"""Installability: declared ranges vs the pinned set-up, Python 3.10 sources, the oldest torch.

The lower-bound smoke test runs where an environment with the oldest supported torch exists:
``CLADE_OLDEST_PYTHON=/path/to/python`` or ``.venv-oldest/`` in the repository root
(``python -m venv .venv-oldest && .venv-oldest/bin/pip install torch==2.4.* torchvision==0.19.*
numpy scipy pandas matplotlib seaborn tabulate tqdm fvcore pytorch-fid``); elsewhere it skips.
"""
import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:   # Python 3.10
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs tomllib (3.11+) or tomli")

ROOT = Path(__file__).resolve().parents[1]
# The packages pyproject.toml ships (tests/test_layering.py orders them).
PACKAGES = ("fileio", "data", "models", "training", "analysis", "cli")
SOURCES = sorted(p for folder in (*PACKAGES, "tests", "scripts") for p in (ROOT / folder).rglob("*.py")) \
    + sorted(ROOT.glob("*.py"))
OLDEST_TORCH = Version("2.4")
# Standard-library names that Python 3.10 lacks.
NEWER_THAN_310 = re.compile(r"\b(tomllib|ExceptionGroup|StrEnum|TaskGroup|file_digest|typing\.Self|datetime\.UTC|"
                            r"getLevelNamesMapping|LiteralString|assert_never|add_note)\b|from typing import .*\bSelf\b")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements() -> list[Requirement]:
    project = _project()
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = Version(version.strip())
    return pins


def test_every_requirement_is_pinned_inside_its_range():
    pins = _pins()
    for req in _requirements():
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{req.name} is required by pyproject.toml but not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject.toml's {req.specifier}"


def test_ranges_admit_existing_environments():
    project = _project()
    python = SpecifierSet(project["requires-python"])
    assert all(python.contains(v) for v in ("3.10.0", "3.11.7", "3.12.1", "3.13.0")) and not python.contains("3.14.0")
    torch_req = next(r for r in _requirements() if r.name == "torch")
    assert torch_req.specifier.contains(OLDEST_TORCH) and torch_req.specifier.contains("2.11.0")
    assert not any(s.operator == "==" for r in _requirements() for s in r.specifier), "exact pins belong in constraints.txt"


def test_this_environment_satisfies_the_ranges():
    for req in _requirements():
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            continue   # dev extras need not be installed everywhere
        assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} not in {req.specifier}"


def test_a_wheel_built_offline_holds_every_module_and_both_commands(tmp_path):
    source = tmp_path / "source"   # a copy: building writes build/ and *.egg-info beside the sources
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", source)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("clade_toolkit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    modules = {p.relative_to(ROOT).as_posix() for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    assert "analysis/stages/registry.py" in modules and not modules - names, sorted(modules - names)
    assert "clade-analysis = cli.run_analysis:main" in entry_points
    assert "clade-train = cli.train:command" in entry_points


def test_sources_parse_as_python_310_and_use_no_newer_stdlib_names():
    for path in SOURCES:
        text = path.read_text()
        ast.parse(text, filename=str(path), feature_version=(3, 10))
        if path.name != "test_install.py":   # this file names them, and imports tomllib with a fallback
            lines = [line for line in text.splitlines() if NEWER_THAN_310.search(line)]
            assert not lines, f"{path}: Python >= 3.11 names: {lines}"


@pytest.mark.parametrize("version", ["3.10", "3.12", "3.13"])
def test_sources_compile_under_other_supported_pythons(version):
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which(f"python{version}"), *sorted(pyenv.glob(f"versions/{version}.*/bin/python{version}"))]
    working = [str(c) for c in candidates
               if c and subprocess.run([str(c), "-c", "pass"], capture_output=True).returncode == 0]
    if not working:
        pytest.skip(f"python{version} is not on PATH (nor under {pyenv}/versions)")
    python = working[0]
    code = ("import sys\nfor p in sys.argv[1:]:\n    compile(open(p).read(), p, 'exec')")
    result = subprocess.run([python, "-c", code, *map(str, SOURCES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def _oldest_python() -> str:
    candidates = [os.environ.get("CLADE_OLDEST_PYTHON"), ROOT / ".venv-oldest" / "bin" / "python"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip("no environment with the oldest supported torch (set CLADE_OLDEST_PYTHON or create .venv-oldest)")


SMOKE = """
import torch
from packaging.version import Version
from models import build_generator
from data.labels import make_semantic
assert Version(torch.__version__.split("+")[0]) < Version("{next_minor}"), torch.__version__
label = torch.randint(0, 8, (2, 1, 64, 64))
instance = torch.randint(0, 3, (2, 1, 64, 64))
for norm in ("spade", "clade", "clade-icpe"):
    G = build_generator("synthetic", norm, ngf=4)
    semantic = make_semantic(label, instance, G.config)
    dist = torch.rand(2, 2, 64, 64) if norm == "clade-icpe" else None
    G(semantic, dist=dist).mean().backward()
    with torch.no_grad():
        assert G.eval()(semantic, dist=dist).shape == (2, 3, 64, 64)
print("ok", torch.__version__)
"""


def test_tiny_models_run_under_the_oldest_supported_torch():
    python = _oldest_python()
    next_minor = f"{OLDEST_TORCH.major}.{OLDEST_TORCH.minor + 1}"
    result = subprocess.run([python, "-c", SMOKE.format(next_minor=next_minor)], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stderr[-3000:]
