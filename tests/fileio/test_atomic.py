"""fileio: a write either replaces the file completely or leaves the old one, never half of it."""
import json
import os

import pytest
import torch

from fileio import (append_line, atomic_path, provenance, save_torch_atomic, write_bytes_atomic, write_json_atomic,
                    write_text_atomic)


def test_writers_create_the_folder_and_leave_no_temporary(tmp_path):
    write_text_atomic(tmp_path / "a" / "x.txt", "hello")
    write_bytes_atomic(tmp_path / "a" / "y.bin", b"\x00\x01")
    write_json_atomic(tmp_path / "b" / "m.json", {"path": tmp_path, "n": 0})
    save_torch_atomic({"w": torch.arange(3)}, tmp_path / "c" / "s.pt")
    assert (tmp_path / "a" / "x.txt").read_text() == "hello"
    assert (tmp_path / "a" / "y.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "b" / "m.json").read_text()) == {"path": str(tmp_path), "n": 0}
    assert torch.equal(torch.load(tmp_path / "c" / "s.pt", weights_only=True)["w"], torch.arange(3))
    assert not [p for p in tmp_path.rglob(".*tmp*")]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = write_text_atomic(tmp_path / "table.csv", "old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["table.csv"]


def test_the_temporary_keeps_the_suffix_for_writers_that_choose_a_format_by_it(tmp_path):
    with atomic_path(tmp_path / "figure.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"png")
    assert (tmp_path / "figure.png").read_bytes() == b"png"


def test_append_line_adds_one_line_each(tmp_path):
    append_line(tmp_path / "log" / "log.jsonl", '{"step": 1}')
    append_line(tmp_path / "log" / "log.jsonl", '{"step": 2}\n')
    assert (tmp_path / "log" / "log.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'


def test_provenance_names_versions_device_and_extra():
    info = provenance("cpu", seed=3)
    assert info["device"] == "cpu" and info["seed"] == 3 and info["torch"] == torch.__version__
    assert {"created", "command", "python", "numpy", "device_name", "platform"} <= set(info)
