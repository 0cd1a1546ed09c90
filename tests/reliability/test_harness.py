"""The reliability summary counts the marked cases by kind and outcome."""
import shutil
import subprocess
import sys
from pathlib import Path

CASES = '''
import pytest


@pytest.mark.reliability("clear_error")
def test_refused():
    with pytest.raises(ValueError, match="expected"):
        int_or_error("x")


@pytest.mark.reliability("clear_error")
def test_not_refused():
    int_or_error("3")
    raise AssertionError("no error")


@pytest.mark.reliability("data_loss")
def test_lost():
    raise AssertionError("the user's file was overwritten")


@pytest.mark.reliability("wrong_run")
def test_prevented():
    pass


@pytest.mark.reliability("wrong_run")
def test_skipped():
    pytest.skip("needs a GPU")


def test_unmarked():
    pass


def int_or_error(text):
    if not text.isdigit():
        raise ValueError(f"bad value {text!r}; expected a number")
    return int(text)
'''


def test_summary_counts_tried_cases_by_kind_and_the_data_lost(tmp_path):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(CASES)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert "2 failed, 3 passed, 1 skipped" in result.stdout, result.stdout[-2000:]
    assert ("cases tried: 4; clear errors: 1 of 2; wrong runs prevented: 1 of 1; data-loss cases kept safe: 0 of 1; "
            "data lost: 1") in result.stdout
