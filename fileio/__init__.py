"""The bottom layer: atomic file writes, safe weights reading and run provenance. Imports nothing of the project.

    from fileio import write_json_atomic, provenance
    write_json_atomic("out/meta.json", provenance("cpu", seed=0))
"""
from .atomic import (append_line, atomic_path, json_safe, save_torch_atomic, write_bytes_atomic, write_json_atomic,
                     write_text_atomic)
from .lock import FolderLocked, folder_lock
from .provenance import device_description, git_commit, provenance, weights_digests
from .weights import (NonFiniteWeightsError, WeightsFileError, load_weights, non_finite_tensors, refuse_non_finite,
                      unreadable_reason)

__all__ = ["FolderLocked", "NonFiniteWeightsError", "WeightsFileError", "append_line", "atomic_path",
           "device_description", "folder_lock", "git_commit", "json_safe", "load_weights", "non_finite_tensors",
           "provenance", "refuse_non_finite", "save_torch_atomic", "unreadable_reason", "write_bytes_atomic",
           "weights_digests", "write_json_atomic", "write_text_atomic"]
