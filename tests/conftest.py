"""Shared fixtures: paths to ../shared (skipped cleanly when absent), slow/gpu markers."""
import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
COCO_SAMPLE = SHARED / "data" / "coco_stuff_sample"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow")
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present (it lives in ../shared beside the project)")
    return path


@pytest.fixture
def reference_dir() -> Path:
    return _need(REFERENCE)


@pytest.fixture
def coco_sample_dir() -> Path:
    return _need(COCO_SAMPLE)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: a second OpenMP thread only adds barrier waits (and stalls on a busy CI box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
