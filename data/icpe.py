"""Intra-class positional encoding (ICPE): each pixel's offset from its component's centroid.

For every 8-connected component of every encoded class, channel 0 holds the row offset and
channel 1 the column offset of each pixel from the component's centroid, each divided by the
component's largest absolute offset on that axis + 1e-5 (``normalize=True``), so values lie in
(-1, 1). Pixels of classes that are not encoded are 0.

    dist = icpe_map(label_png, mode="corrected", dontcare=255)             # float32 [2, H, W]
    dists = icpe_map_batch(labels_on_gpu, mode="corrected", dontcare=255)  # float32 [N, 2, H, W]

Modes (a required keyword everywhere: a CLADE-ICPE generator must be fed the maps of the mode it
was trained with, which its ``GeneratorConfig.icpe_mode`` records; they differ on about 30 % of
the pixels of the synthetic scenes):

- ``"official"`` reproduces ``cal_connectedComponents`` of the official CLADE code, quirks
  included: raw label 0 is never encoded (in COCO-Stuff it is *person*), every other value
  (255 'unlabeled' too) is encoded; ``dontcare`` must be None.
- ``"corrected"`` encodes every class, 0 included, except ``dontcare`` (a raw id, or None).

How it is fast: one labelling of all classes at once instead of one pass per class and a
full-image pass per component. The numpy path works on horizontal runs of equal labels (a run
is one union-find node; two runs of one class in adjacent rows are 8-connected iff a run's
first pixel touches the other, so 4 look-ups per run find every edge), then
``scipy.sparse.csgraph`` joins them and per-component sums, centroids and extreme rows/columns
come from ``np.bincount`` over runs. Row offsets are constant along a run; column offsets depend
only on (component, column), so they are tabulated per component and gathered per pixel. Centroids are integer sums / area in float64 like
OpenCV's, and offsets / denominators are computed in float64 like the official code, so the
output equals it bit for bit (cast to float32 once, as the official ``+=`` into a float32
array does). The torch path (any device) joins pixels by min-label hooking with
``scatter_reduce`` and pointer jumping, vectorised over all pixels of the batch.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

MODES = ("official", "corrected")
DEFAULT_MODE = "corrected"  # what the toolkit's datasets compute and train.py trains with
EPS = 1e-5  # added to the largest |offset| of a component, as the official normalize_dist


def _encoded_value_check(mode: str, dontcare: int | None) -> int | None:
    """The one raw label value that is not encoded (0 officially, ``dontcare`` corrected)."""
    if mode not in MODES:
        raise ValueError(f"ICPE mode={mode!r}; expected one of {list(MODES)}")
    if mode == "official":
        if dontcare is not None:
            raise ValueError(f"ICPE mode='official' skips raw label 0 and encodes every other value; "
                             f"got dontcare={dontcare}, expected None (use mode='corrected' to "
                             f"leave a dontcare id out)")
        return 0
    return dontcare


def _as_label_array(label) -> np.ndarray:
    array = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"ICPE needs a 2-D integer label map [H, W] (or [1, H, W]); got shape "
                         f"{array.shape} dtype {array.dtype}")
    return np.ascontiguousarray(array)


def _run_components(flat: np.ndarray, width: int):
    """Horizontal runs of equal labels and the 8-connected component of each run."""
    size = flat.size
    start = np.empty(size, dtype=bool)
    start[0] = True
    np.not_equal(flat[1:], flat[:-1], out=start[1:])
    start[::width] = True
    starts = np.flatnonzero(start)
    lengths = np.diff(starts, append=size)

    # Each run looks at the pixels up-left/up and down-left/down of its first pixel.
    col0 = starts % width
    src, dst = [], []
    for delta, valid in ((-width - 1, (starts >= width) & (col0 > 0)),
                         (-width, starts >= width),
                         (width - 1, (starts < size - width) & (col0 > 0)),
                         (width, starts < size - width)):
        runs = np.flatnonzero(valid)
        neighbour = starts[runs] + delta
        same = flat[neighbour] == flat[starts[runs]]
        src.append(runs[same])
        dst.append(np.searchsorted(starts, neighbour[same], side="right") - 1)
    src, dst = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(src.size, dtype=np.int8), (src, dst)),
                       shape=(starts.size, starts.size)).tocsr()
    _, component = connected_components(graph, directed=False)
    return starts, lengths, col0, component


def _runs_to_dist(flat, width, starts, lengths, col0, component, skip, normalize) -> np.ndarray:
    height = flat.size // width
    rows = starts // width
    col1 = col0 + lengths - 1
    n = int(component.max()) + 1
    area = np.bincount(component, lengths, n)
    cy = np.bincount(component, rows * lengths, n) / area
    cx = np.bincount(component, lengths * col0 + lengths * (lengths - 1) // 2, n) / area
    lo_c, hi_c = np.full(n, width), np.zeros(n, dtype=np.int64)
    np.minimum.at(lo_c, component, col0)
    np.maximum.at(hi_c, component, col1)
    if normalize:
        lo_r, hi_r = np.full(n, height), np.zeros(n, dtype=np.int64)
        np.minimum.at(lo_r, component, rows)
        np.maximum.at(hi_r, component, rows)
        den_r = np.maximum(hi_r - cy, cy - lo_r) + EPS
        den_c = np.maximum(hi_c - cx, cx - lo_c) + EPS
    else:
        den_r, den_c = np.ones(n), np.ones(n)
    if skip is not None:
        # x / inf = 0: pixels of the class that is not encoded stay 0.
        skipped = np.zeros(n, dtype=bool)
        skipped[component[flat[starts] == skip]] = True
        den_r[skipped] = np.inf
        den_c[skipped] = np.inf

    out = np.empty((2, flat.size), dtype=np.float32)
    # Row offsets are constant along a run.
    run_row_offset = (rows - cy[component]) / den_r[component]
    out[0] = np.repeat(run_row_offset.astype(np.float32), lengths)
    # Column offsets depend on (component, column) only: tabulate them over each component's
    # column span (far fewer entries than pixels), then look each pixel up in the table.
    span = hi_c - lo_c + 1
    table_start = np.cumsum(span) - span
    table_comp = np.repeat(np.arange(n), span)
    table_col = np.arange(table_comp.size) - np.repeat(table_start - lo_c, span)
    table = ((table_col - cx[table_comp]) / den_c[table_comp]).astype(np.float32)
    run_base = (table_start - lo_c)[component]
    index = np.repeat(run_base, lengths).reshape(height, width) + np.arange(width)
    out[1] = table[index.reshape(-1)]
    return out.reshape(2, height, width)


def icpe_map(label, *, mode: str, normalize: bool = True, dontcare: int | None = None) -> np.ndarray:
    """ICPE of one raw label map ([H, W] integer numpy array or tensor) -> float32 [2, H, W].

    ``mode="official"`` equals the official ``cal_connectedComponents(label, 'norm' | 'no')``
    (``normalize`` True | False); ``mode="corrected"`` also encodes class 0 and leaves out
    the raw id ``dontcare``.
    """
    skip = _encoded_value_check(mode, dontcare)
    array = _as_label_array(label)
    height, width = array.shape
    if array.size == 0:
        return np.zeros((2, height, width), dtype=np.float32)
    flat = array.reshape(-1)
    starts, lengths, col0, component = _run_components(flat, width)
    return _runs_to_dist(flat, width, starts, lengths, col0, component, skip, normalize)


def _components_torch(labels: torch.Tensor) -> torch.Tensor:
    """8-connected components of equal labels in [N, H, W]: the smallest flat index of each."""
    n, h, w = labels.shape
    index = torch.arange(n * h * w, device=labels.device).view(n, h, w)
    edges = []
    # Right, down, down-right, down-left cover all 8 neighbours once.
    for a, b in ((np.s_[:, :, :-1], np.s_[:, :, 1:]), (np.s_[:, :-1, :], np.s_[:, 1:, :]),
                 (np.s_[:, :-1, :-1], np.s_[:, 1:, 1:]), (np.s_[:, :-1, 1:], np.s_[:, 1:, :-1])):
        same = labels[a] == labels[b]
        edges.append((index[a][same], index[b][same]))
    u = torch.cat([e[0] for e in edges])
    v = torch.cat([e[1] for e in edges])
    parent = torch.arange(n * h * w, device=labels.device)
    while True:
        pu, pv = parent[u], parent[v]
        differ = pu != pv
        if not bool(differ.any()):
            return parent.view(n, h, w)
        u, v, pu, pv = u[differ], v[differ], pu[differ], pv[differ]
        # Hook the larger root onto the smaller one; parent[i] <= i always, so no cycles.
        parent.scatter_reduce_(0, torch.maximum(pu, pv), torch.minimum(pu, pv), reduce="amin")
        while True:  # pointer jumping until every pixel points at its root
            grand = parent[parent]
            if torch.equal(grand, parent):
                break
            parent = grand


def _icpe_torch(labels: torch.Tensor, skip: int | None, normalize: bool) -> torch.Tensor:
    n, h, w = labels.shape
    device = labels.device
    root = _components_torch(labels).reshape(-1)
    size = n * h * w
    rows = torch.arange(h, device=device, dtype=torch.float64).view(1, h, 1).expand(n, h, w).reshape(-1)
    cols = torch.arange(w, device=device, dtype=torch.float64).view(1, 1, w).expand(n, h, w).reshape(-1)
    zeros = torch.zeros(size, dtype=torch.float64, device=device)
    area = zeros.index_add(0, root, torch.ones_like(rows))
    out = []
    for coord in (rows, cols):
        centre = zeros.index_add(0, root, coord)[root] / area[root]
        offset = coord - centre
        if normalize:
            largest = zeros.scatter_reduce(0, root, offset.abs(), reduce="amax", include_self=True)
            offset = offset / (largest[root] + EPS)
        out.append(offset)
    dist = torch.stack(out).view(2, n, h, w).transpose(0, 1)
    if skip is not None:
        dist = dist.masked_fill((labels == skip)[:, None], 0.0)
    return dist.float().contiguous()


def icpe_map_batch(labels: torch.Tensor, *, mode: str, normalize: bool = True,
                   dontcare: int | None = None, backend: str = "auto") -> torch.Tensor:
    """ICPE of a batch of raw label maps [N, H, W] (or [N, 1, H, W]) -> float32 [N, 2, H, W].

    The result is on the device of ``labels``. ``backend``: "numpy" (CPU, one image at a time),
    "torch" (vectorised, any device) or "auto" (numpy for CPU tensors, torch otherwise).
    """
    skip = _encoded_value_check(mode, dontcare)
    if labels.dim() == 4 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.dim() != 3 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"icpe_map_batch needs integer labels [N, H, W] or [N, 1, H, W]; got shape "
                         f"{tuple(labels.shape)} dtype {labels.dtype}")
    if backend not in ("auto", "numpy", "torch"):
        raise ValueError(f"backend={backend!r}; expected 'auto', 'numpy' or 'torch'")
    if backend == "numpy" or (backend == "auto" and labels.device.type == "cpu"):
        maps = [icpe_map(item, mode=mode, normalize=normalize, dontcare=dontcare) for item in labels.cpu().numpy()]
        stacked = np.stack(maps) if maps else np.zeros((0, 2, *labels.shape[1:]), np.float32)
        return torch.from_numpy(stacked).to(labels.device)
    if labels.numel() == 0:
        return torch.zeros(labels.shape[0], 2, *labels.shape[1:], device=labels.device)
    return _icpe_torch(labels.long(), skip, normalize)


def flip_icpe(dist, *, mode: str):
    """The ICPE map of a horizontally flipped image, from the map [..., 2, H, W] of the original.

    ``dist``: numpy array or tensor (returned as the same type). "official" reproduces the
    official loader: it flips the map vertically (``flip(2)`` on [1, 2, H, W]) and keeps the
    column offsets' sign. "corrected" mirrors it horizontally and negates the column offsets,
    which is the ICPE of the flipped label map.
    """
    if mode not in MODES:
        raise ValueError(f"flip mode={mode!r}; expected one of {list(MODES)}")
    is_tensor = isinstance(dist, torch.Tensor)
    if mode == "official":
        return dist.flip(-2) if is_tensor else dist[..., ::-1, :]
    sign = [[[1.0]], [[-1.0]]]
    if is_tensor:
        return dist.flip(-1) * torch.tensor(sign, dtype=dist.dtype, device=dist.device)
    return dist[..., ::-1] * np.array(sign, dtype=dist.dtype)
