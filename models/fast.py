"""Kernels of the fused inference model (``models.fusion``), and ``accelerate``.

These compute what the reference layers compute, faster, from tensors prepared once by
``models.fusion.fuse_for_inference`` (tests/models/test_fast_paths.py checks the results):

- :func:`conv2d_prepared`: a conv whose weight was prepared once (spectral norm divided, cast
  to the compute dtype, channels_last, on CPU oneDNN's blocked layout: prepacking), with the
  residual add fused into the convolution;
- :func:`tap_indices` / :func:`onehot_conv_rows`: a conv whose input is an exact one-hot map
  (the generator's ``fc``, SPADE's ``mlp_shared``) as a sum of gathered weight rows
  (``embedding_bag``): it reads only the weights of the classes present, ~150x fewer
  multiply-adds;
- :func:`class_affine`: CLADE's per-class modulation, rows gathered tile by tile on CPU so
  they are used while in cache, with the following leaky_relu and the ICPE scaling applied
  to the same tile.

``accelerate(G_fast, ...)`` adds opt-in options on top (compute dtype, ``torch.compile``,
CUDA graphs, cuDNN autotuning, glibc allocator tuning on CPU) and returns a callable with
G's call signature.

    fast = accelerate(fuse_for_inference(G), dtype=torch.bfloat16)
    image = fast(semantic)
"""
from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNorm

_MKLDNN = torch.ops.mkldnn
# oneDNN weight prepacking (the ops inductor's CPU backend uses); absent on some builds.
_PREPACK_OPS = (hasattr(_MKLDNN, "_convolution_pointwise")
                and hasattr(_MKLDNN, "_reorder_convolution_weight"))
_prepack_broken = False  # set when a prepacked call fails once; then dense weights only
_graph_safe = False       # see graph_safe()


@contextlib.contextmanager
def graph_safe():
    """Within the block the fused model makes no data-dependent choice (no host-device sync),
    as CUDA graph capture requires: e.g. convs on the one-hot map stay convolutions."""
    global _graph_safe
    before, _graph_safe = _graph_safe, True
    try:
        yield
    finally:
        _graph_safe = before


def syncs_allowed() -> bool:
    """False while compiling or capturing a CUDA graph (no host-device synchronisation)."""
    return not (torch.compiler.is_compiling()
                or (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()))


def data_dependent_choices() -> bool:
    """Whether the fused model may look at input values to choose how to compute."""
    return not _graph_safe and syncs_allowed()


def native_bf16(device) -> bool:
    """Whether ``device`` computes in bf16 natively: a CUDA GPU with bf16, or a CPU with
    AMX / AVX512-BF16 (oneDNN's check); elsewhere bf16 is emulated and slower than fp32."""
    return _native_bf16(torch.device(device).type)


@functools.lru_cache(maxsize=None)
def _native_bf16(device_type: str) -> bool:
    # Asked per conv call: a hardware fact, looked up once.
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device_type == "cpu" and torch.backends.mkldnn.is_available() and bool(_MKLDNN._is_mkldnn_bf16_supported())


# ----------------------------------------------------------------------------- convs
def conv_weight(conv: nn.Module) -> torch.Tensor:
    """The weight a conv uses in eval mode: ``weight_orig / sigma`` under spectral norm."""
    for hook in conv._forward_pre_hooks.values():
        if isinstance(hook, SpectralNorm) and hook.name == "weight":
            return hook.compute_weight(conv, do_power_iteration=False)
    return conv.weight


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """x's dtype, or autocast's when autocast is on for x's device."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _can_prepack(x: torch.Tensor, dtype: torch.dtype) -> bool:
    return (_PREPACK_OPS and not _prepack_broken and not torch.compiler.is_compiling()
            and x.device.type == "cpu" and x.dim() == 4
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled and x.dtype == dtype
            and (dtype == torch.float32 or (dtype == torch.bfloat16 and native_bf16("cpu")))
            and x.is_contiguous(memory_format=torch.channels_last))


def conv2d_prepared(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                    prepared: dict, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``conv2d(x, weight, bias, padding) (+ residual)``, stride 1, with the weight prepared once.

    ``prepared`` is the caller's store of prepared weights (one entry per compute dtype and
    layout; on CPU with channels_last input, per input shape: oneDNN's prepacked layout,
    with the residual add fused into the convolution). The caller empties it when ``weight``
    changes. Nothing is stored while compiling.
    """
    global _prepack_broken
    dtype = compute_dtype(x)
    if _can_prepack(x, dtype):
        key = ("packed", dtype, tuple(x.shape))
        if key not in prepared:
            w = weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
            packed = _MKLDNN._reorder_convolution_weight(w, [padding, padding], [1, 1], [1, 1], 1, list(x.shape))
            prepared[key] = (packed, None if bias is None else bias.detach().to(dtype))
        packed, b = prepared[key]
        p = [padding, padding]
        try:
            if residual is None:
                return _MKLDNN._convolution_pointwise(x, packed, b, p, [1, 1], [1, 1], 1, "none", [], "")
            residual = residual.to(dtype).contiguous(memory_format=torch.channels_last)
            return _MKLDNN._convolution_pointwise.binary(x, residual, packed, b, p, [1, 1], [1, 1], 1,
                                                         "add", None, None, [], None)
        except RuntimeError:  # an unsupported case on this build: dense weights from now on
            _prepack_broken = True

    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 \
        else torch.contiguous_format
    key = ("dense", dtype, fmt)
    if torch.compiler.is_compiling():
        w, b = weight.to(dtype).contiguous(memory_format=fmt), None if bias is None else bias.to(dtype)
    else:
        if key not in prepared:
            prepared[key] = (weight.detach().to(dtype).contiguous(memory_format=fmt),
                             None if bias is None else bias.detach().to(dtype))
        w, b = prepared[key]
    out = F.conv2d(x, w, b, padding=padding)
    if residual is None:
        return out
    return out.add_(residual) if out.dtype == residual.dtype else out + residual


# ----------------------------------------------------------------------------- one-hot convs
def tap_indices(label: torch.Tensor, kernel_size: int, classes: int) -> torch.Tensor:
    """[N*H*W, k*k] row indices into a :func:`onehot_conv` table for a class map [N, H, W].

    Tap ``t`` of pixel p reads row ``t * (classes + 1) + label[p + offset_t]``; pixels outside
    the map read the zero row ``t * (classes + 1) + classes`` (zero padding).
    """
    n, h, w = label.shape
    pad = kernel_size // 2
    padded = F.pad(label, (pad, pad, pad, pad), value=classes)
    taps = [padded[:, i:i + h, j:j + w] for i in range(kernel_size) for j in range(kernel_size)]
    offsets = torch.arange(kernel_size * kernel_size, device=label.device) * (classes + 1)
    return (torch.stack(taps, dim=-1) + offsets).reshape(n * h * w, kernel_size * kernel_size)


def onehot_conv_rows(weight: torch.Tensor, bias: torch.Tensor | None, classes: int) -> torch.Tensor:
    """The row table of :func:`onehot_conv` for a conv ``weight`` [O, Cin, k, k] whose first
    ``classes`` input channels are one-hot: one row per (tap, class), a zero row after each
    tap (padding), the bias last. [k * k * (classes + 1) + 1, O], float32."""
    w = weight.detach().float()
    rows = w[:, :classes].permute(2, 3, 1, 0)                  # [k, k, classes, O]
    rows = F.pad(rows, (0, 0, 0, 1)).reshape(-1, w.shape[0])   # zero row after each tap
    bias = bias.detach().float()[None] if bias is not None else rows.new_zeros(1, w.shape[0])
    return torch.cat([rows, bias])


def onehot_conv(rows: torch.Tensor, taps: torch.Tensor, out_size) -> torch.Tensor:
    """``conv(one_hot(label))`` as a sum of gathered rows: ``rows`` from
    :func:`onehot_conv_rows` (in the compute dtype), ``taps`` from :func:`tap_indices`.

    Equal to the convolution up to floating-point summation order; output
    [N, out_channels, H, W], channels_last. Other input channels (the instance edge) are
    the caller's to add.
    """
    n = taps.shape[0]
    bias_row = taps.new_full((n, 1), rows.shape[0] - 1)
    out = F.embedding_bag(torch.cat([taps, bias_row], 1), rows, mode="sum")
    n_img, (h, w) = n // (out_size[0] * out_size[1]), out_size
    return out.view(n_img, h, w, -1).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- class modulation
# Gathered rows per tile on CPU: ~1 MiB stays in the 2 MiB L2 cache of the reference machine's
# cores; one-shot gathers of a 256x256 map write and re-read ~67 MB per layer. Measured on a
# CLADE-ICPE layer [1, 128, 256, 256], 2 threads: 13.8 ms one-shot, 8.1 ms tiled (4-row tiles).
TILE_BYTES = 1 << 20


def class_affine(x: torch.Tensor, label: torch.Tensor, table: torch.Tensor, *,
                 scales: torch.Tensor | None = None, extra: torch.Tensor | None = None,
                 negative_slope: float | None = None, tile_bytes: int | None = None) -> torch.Tensor:
    """Per-class affine modulation of ``x`` [N, C, H, W] by class map ``label`` [N, H, W].

    ``table`` [classes, 2C] (or [classes, 3C] with ``scales``) in x's dtype; with rows
    ``A, B(, D) = table[label]`` split in C-channel parts the output is ``x * A + B``, or
    ``(x * A + B) * scales[..., :1] + D * scales[..., 1:]`` for ICPE scales [N, H, W, 2];
    ``extra`` [N, E, H, W] channels are appended (CLADE's edge feature), then
    ``leaky_relu(., negative_slope)`` if given. Output channels_last, [N, C + E, H, W].

    On CPU the rows are gathered tile by tile (``tile_bytes``, default :data:`TILE_BYTES`) so
    they are consumed while in cache; elsewhere in one pass over the whole map, and under
    ``torch.compile`` as one functional expression (no ``out=``: no graph break).
    """
    n, c, h, w = x.shape
    x = x.contiguous(memory_format=torch.channels_last)
    if torch.compiler.is_compiling():   # one functional expression: the compiler fuses it
        return _class_affine_expression(x, label, table, scales, extra, negative_slope)
    e = 0 if extra is None else extra.shape[1]
    out = torch.empty((n, c + e, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    if extra is not None:
        out[:, c:] = extra
        if negative_slope is not None:
            F.leaky_relu_(out[:, c:], negative_slope)
    rows_total = n * h
    rows_per_tile = rows_total
    if x.device.type == "cpu":
        tile_bytes = TILE_BYTES if tile_bytes is None else tile_bytes
        rows_per_tile = max(1, tile_bytes // (w * table.shape[1] * table.element_size()))
    x_rows = x.permute(0, 2, 3, 1).view(rows_total, w, c)   # views: NHWC memory
    out_rows = out.permute(0, 2, 3, 1).view(rows_total, w, c + e)[..., :c]
    label_rows = label.reshape(rows_total, w)
    scale_rows = None if scales is None else scales.to(x.dtype).reshape(rows_total, w, 2)
    for start in range(0, rows_total, rows_per_tile):
        tile = slice(start, start + rows_per_tile)
        rows = F.embedding(label_rows[tile], table)
        o = torch.addcmul(rows[..., c:2 * c], x_rows[tile], rows[..., :c], out=out_rows[tile])
        if scale_rows is not None:
            o.mul_(scale_rows[tile, :, :1]).addcmul_(rows[..., 2 * c:], scale_rows[tile, :, 1:])
        if negative_slope is not None:
            F.leaky_relu_(o, negative_slope)
    return out


def _class_affine_expression(x, label, table, scales, extra, negative_slope):
    c = x.shape[1]
    rows = F.embedding(label, table).permute(0, 3, 1, 2)
    out = torch.addcmul(rows[:, c:2 * c], x, rows[:, :c])
    if scales is not None:
        s = scales.to(x.dtype).permute(0, 3, 1, 2)
        out = out * s[:, :1] + rows[:, 2 * c:] * s[:, 1:]
    if extra is not None:
        out = torch.cat([out, extra.to(out.dtype)], 1)
    if negative_slope is not None:
        out = F.leaky_relu(out, negative_slope)
    return out.contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- CPU allocator
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def tune_cpu_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 31) -> bool:
    """Make glibc reuse freed large blocks instead of mapping fresh pages for every tensor.

    CPU tensors come from malloc; glibc serves blocks above its mmap threshold (at most
    32 MiB) with fresh pages, so every large activation pays a page fault per 4 KiB on first
    touch: a 67 MB gather takes 28 ms fresh vs 9 ms in reused memory (1 thread), and the
    ade20k generators run ~20% faster with this setting. Process-wide, for the process's
    lifetime; the resident size then stays near its peak. Same effect as preloading
    jemalloc / tcmalloc. Returns False where glibc's ``mallopt`` is unavailable.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))
                    and libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    except (OSError, AttributeError):
        return False


# ----------------------------------------------------------------------------- accelerate
class Accelerated(nn.Module):
    """A generator (normally the fused model, ``models.fuse_for_inference(G)``) behind opt-in
    accelerations, with its call signature ``(semantic, z=None, dist=None)``.

    Holds the model itself (no weight copy); with ``compile=True`` inductor's freezing
    snapshots the weights at the first call.
    """

    def __init__(self, G: nn.Module, *, channels_last: bool = True, dtype: torch.dtype | None = None,
                 compile: bool = False, compile_mode: str | None = None, cuda_graphs: bool = False):
        super().__init__()
        self.G = G
        self.channels_last = channels_last
        self.dtype = dtype
        self.cuda_graphs = cuda_graphs
        self._graphs: dict = {}
        self._run = self._eager
        if compile:
            self._run = torch.compile(self._eager, mode=compile_mode, dynamic=False)

    def _eager(self, semantic, z=None, dist=None):
        if self.channels_last:
            semantic = semantic.contiguous(memory_format=torch.channels_last)
        return self.G(semantic, z, dist, dtype=self.dtype)

    def forward(self, semantic: torch.Tensor, z: torch.Tensor | None = None,
                dist: torch.Tensor | None = None) -> torch.Tensor:
        if self.G.training:
            raise ValueError("accelerate() is for inference; pass models.fuse_for_inference(G) (train with G itself)")
        with torch.inference_mode():
            if self.cuda_graphs and semantic.is_cuda:
                return self._graphed(semantic, z, dist)
            return self._run(semantic, z, dist)

    def _graphed(self, semantic, z, dist):
        """Replay a CUDA graph captured for these input shapes (captured on first use)."""
        key = tuple(None if t is None else (tuple(t.shape), t.dtype) for t in (semantic, z, dist))
        if key not in self._graphs:
            static = [None if t is None else t.clone() for t in (semantic, z, dist)]
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with graph_safe():
                with torch.cuda.stream(stream):
                    for _ in range(3):  # warm-up: cuDNN autotuning, weight caches
                        self._run(*static)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    out = self._run(*static)
            self._graphs[key] = (graph, static, out)
        graph, static, out = self._graphs[key]
        for dst, src in zip(static, (semantic, z, dist)):
            if dst is not None:
                dst.copy_(src)
        graph.replay()
        return out.clone()


def accelerate(G: nn.Module, *, channels_last: bool = True, dtype: torch.dtype | None = None,
               compile: bool = False, compile_mode: str | None = None,
               cuda_graphs: bool = False, cudnn_benchmark: bool = True,
               cpu_allocator: bool = True) -> Accelerated:
    """A model for inference (normally ``models.fuse_for_inference(G)``) behind opt-in
    accelerations; same call signature as G.

    - ``dtype``: compute dtype of the fused model, e.g. ``torch.bfloat16`` (weights and
      activations in bf16, tables folded in fp32 then cast; output float32).
    - ``compile``: ``torch.compile`` the call (``compile_mode`` e.g. ``"reduce-overhead"``
      for CUDA graphs through inductor, ``"max-autotune"``). On CPU, inductor's freezing is
      switched on so weights are folded and prepacked at compile time: the compiled
      callable then snapshots the weights.
    - ``cuda_graphs``: capture one CUDA graph per input shape and replay it (batch-1
      latency is launch-bound). Returns a copy of the static output.
    - ``cudnn_benchmark``: set ``torch.backends.cudnn.benchmark`` (autotuned conv algorithms).
    - ``cpu_allocator``: for a model on CPU, :func:`tune_cpu_allocator` (process-wide).
    """
    if cudnn_benchmark and torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    if cpu_allocator and any(p.device.type == "cpu" for p in G.parameters()):
        tune_cpu_allocator()
    if compile:
        import torch._inductor.config as inductor_config
        inductor_config.freezing = True
    return Accelerated(G.eval(), channels_last=channels_last, dtype=dtype, compile=compile,
                       compile_mode=compile_mode, cuda_graphs=cuda_graphs)

