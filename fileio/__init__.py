"""The bottom layer: atomic file writes, safe weights reading and run provenance. Imports nothing of the project.

    from fileio import write_json_atomic, provenance
    write_json_atomic("out/meta.json", provenance("cpu", seed=0))
"""
from .atomic import (append_line, atomic_path, save_torch_atomic, write_bytes_atomic, write_json_atomic,
                     write_text_atomic)
from .lock import FolderLocked, folder_lock
from .provenance import device_description, git_commit, provenance
from .weights import WeightsFileError, load_weights, unreadable_reason

__all__ = ["FolderLocked", "WeightsFileError", "append_line", "atomic_path", "device_description", "folder_lock",
           "git_commit", "load_weights", "provenance", "save_torch_atomic", "unreadable_reason", "write_bytes_atomic",
           "write_json_atomic", "write_text_atomic"]
