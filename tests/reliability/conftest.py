"""Reliability cases: each test is one thing a careful user tried.

Mark a case with ``@pytest.mark.reliability("clear_error" | "wrong_run" | "data_loss")``:
``clear_error`` must end in a one-line message naming the file / value / expectation and a
non-zero exit; ``wrong_run`` must not silently give a wrong result; ``data_loss`` must leave
everything the user already had intact. The end of the test run prints how many cases were
tried, how many ended in a clear error, and how much data was lost (failed ``data_loss`` cases).
"""
from __future__ import annotations

import logging

import pytest

KINDS = ("clear_error", "wrong_run", "data_loss")
_outcomes: dict[str, tuple[str, str]] = {}  # nodeid -> (kind, outcome)
_kinds_by_nodeid: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """train.py replaces the root log handlers (force=True) with ones on this test's captured
    stderr; later tests must not log into that closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def pytest_configure(config):
    config.addinivalue_line("markers", "reliability(kind): a user-facing reliability case (see tests/reliability)")


def pytest_collection_modifyitems(items):
    for item in items:
        marker = item.get_closest_marker("reliability")
        if marker is not None and (not marker.args or marker.args[0] not in KINDS):
            raise pytest.UsageError(f"{item.nodeid}: reliability marker needs one of {KINDS}, got {marker.args}")


def pytest_runtest_logreport(report):
    kind = _kinds_by_nodeid.get(report.nodeid)
    if kind is None or (report.when != "call" and report.outcome == "passed"):
        return
    _outcomes[report.nodeid] = (kind, report.outcome)


def pytest_itemcollected(item):
    marker = item.get_closest_marker("reliability")
    if marker is not None and marker.args:
        _kinds_by_nodeid[item.nodeid] = marker.args[0]


def pytest_terminal_summary(terminalreporter):
    if not _outcomes:
        return
    tried = [o for o in _outcomes.values() if o[1] != "skipped"]
    passed = {kind: sum(1 for k, o in tried if k == kind and o == "passed") for kind in KINDS}
    total = {kind: sum(1 for k, _ in tried if k == kind) for kind in KINDS}
    lost = total["data_loss"] - passed["data_loss"]
    terminalreporter.write_sep("-", "reliability cases")
    terminalreporter.write_line(
        f"cases tried: {len(tried)}; clear errors: {passed['clear_error']} of {total['clear_error']}; "
        f"wrong runs prevented: {passed['wrong_run']} of {total['wrong_run']}; "
        f"data-loss cases kept safe: {passed['data_loss']} of {total['data_loss']}; data lost: {lost}")
