"""The eval fast path (models/fast.py) gives the plain path's result, and steps aside when it must."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from data.labels import make_semantic
from models import build_generator
from models.fast import _class_affine_expression, accelerate, class_affine, clear_eval_caches, graph_safe, onehot_conv, tap_indices
from models.norms import Conditioning

FP32_TOL = 1e-4
BF16_TOL = 5e-2  # analysis.speed.BF16_TOLERANCE: bf16 output vs fp32 plain output (tanh range [-1, 1])

CONFIGS = {
    "edge": dict(label_nc=5, ngf=4, crop_size=64, no_instance=False),
    "no-edge-more": dict(label_nc=6, ngf=4, crop_size=128, aspect_ratio=2.0, num_upsampling_layers="more",
                         no_instance=True),
    "instance-norm": dict(label_nc=4, ngf=4, crop_size=64, param_free_norm="instance"),
}



def calibrated(norm, **options):
    """A tiny generator with BatchNorm running statistics from one train-mode forward and
    non-trivial CLADE tables, so that eval activations have a realistic scale."""
    G = build_generator("custom", norm, **options)
    gen = torch.Generator().manual_seed(1)
    for m in G.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
        if hasattr(m, "class_specified_affine"):
            m.class_specified_affine.bias.data.normal_(0, 0.5, generator=gen)
    semantic, dist = inputs(G, seed=2)
    with torch.no_grad():
        G.train()(semantic, dist=dist)
    for m in G.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return G.eval()


def inputs(G, n=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h, w = G.config.output_size
    label = F.interpolate(torch.randint(0, G.config.class_nc, (n, 1, h // 4, w // 4), generator=gen).float(),
                          size=(h, w)).long()
    instance = torch.randint(0, 3, (n, 1, h, w), generator=gen)
    dist = torch.rand(n, 2, h, w, generator=gen) * 2 - 1
    return make_semantic(label, instance, G.config), dist


def run(G, semantic, dist, fast, **kwargs):
    G.fast_eval = fast
    try:
        with torch.no_grad():
            return G(semantic, dist=dist, **kwargs)
    finally:
        G.fast_eval = True


@pytest.mark.parametrize("norm", ["spade", "clade", "clade-icpe"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_fast_eval_equals_plain(norm, config):
    G = calibrated(norm, **CONFIGS[config])
    semantic, dist = inputs(G)
    plain = run(G, semantic, dist, fast=False)
    fast = run(G, semantic, dist, fast=True)
    assert plain.abs().max() < 0.99, "saturated output: the comparison would be vacuous"
    assert (fast - plain).abs().max() < FP32_TOL
    assert fast.dtype == plain.dtype and fast.is_contiguous()
    bf16 = run(G, semantic, dist, fast=True, dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32
    assert (bf16 - plain).abs().max() < BF16_TOL
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = run(G, semantic, dist, fast=True)
    assert (autocast.float() - plain).abs().max() < BF16_TOL


def test_fast_path_is_taken_only_in_eval_without_autograd():
    G = calibrated("clade", **CONFIGS["edge"])
    assert not G.train().uses_fast_path()
    G.eval()
    assert not G.uses_fast_path()  # autograd on
    with torch.no_grad():
        assert G.uses_fast_path()
        G.fast_eval = False
        assert not G.uses_fast_path()
    with torch.inference_mode():
        G.fast_eval = True
        assert G.uses_fast_path()


def test_dtype_outside_the_fast_path_is_refused():
    G = calibrated("clade", **CONFIGS["edge"])
    semantic, dist = inputs(G)
    with pytest.raises(ValueError, match="fast path only"):
        G.train()(semantic, dtype=torch.bfloat16)


@pytest.mark.parametrize("norm", ["spade", "clade-icpe"])
def test_channels_last_input_and_accelerate(norm):
    G = calibrated(norm, **CONFIGS["edge"])
    semantic, dist = inputs(G)
    plain = run(G, semantic, dist, fast=False)
    fast = run(G, semantic.contiguous(memory_format=torch.channels_last), dist, fast=True)
    assert (fast - plain).abs().max() < FP32_TOL
    assert (accelerate(G)(semantic, dist=dist) - plain).abs().max() < FP32_TOL
    assert (accelerate(G, dtype=torch.bfloat16)(semantic, dist=dist) - plain).abs().max() < BF16_TOL


def test_cached_weights_follow_optimizer_steps_and_load_state_dict():
    G = calibrated("clade", **CONFIGS["edge"])
    semantic, dist = inputs(G)
    before = run(G, semantic, dist, fast=True)  # fills the caches
    opt = torch.optim.Adam(G.parameters(), lr=1e-2)
    G.train()
    G(semantic).square().mean().backward()  # also a spectral-norm power iteration
    opt.step()
    G.eval()
    after = run(G, semantic, dist, fast=True)
    assert (after - before).abs().max() > 1e-3
    assert (after - run(G, semantic, dist, fast=False)).abs().max() < FP32_TOL

    other = calibrated("clade", **CONFIGS["edge"])
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    G.load_state_dict(other.state_dict())
    assert (run(G, semantic, dist, fast=True) - run(other, semantic, dist, fast=False)).abs().max() < FP32_TOL


def test_writes_through_data_need_clear_eval_caches():
    G = calibrated("clade", **CONFIGS["edge"])
    semantic, dist = inputs(G)
    run(G, semantic, dist, fast=True)
    G.head_0.conv_0.weight_orig.data.mul_(2)  # .data bypasses version counters
    clear_eval_caches(G)
    assert (run(G, semantic, dist, fast=True) - run(G, semantic, dist, fast=False)).abs().max() < FP32_TOL


def test_modulation_override_is_respected_in_eval():
    G = calibrated("clade", **CONFIGS["edge"])
    semantic, dist = inputs(G)
    normal = run(G, semantic, dist, fast=True)
    calls = []

    def identity(cond, size):
        calls.append(tuple(size))
        return 1.0, 0.0
    G.up_1.norm_0.modulation_override = identity
    plain = run(G, semantic, dist, fast=False)
    fast = run(G, semantic, dist, fast=True)
    assert len(calls) == 2
    assert (fast - plain).abs().max() < FP32_TOL
    assert (fast - normal).abs().max() > 1e-3


@pytest.mark.parametrize("norm", ["spade", "clade", "clade-icpe"])
def test_hooked_norm_output_is_not_modified_in_place(norm):
    G = calibrated(norm, **CONFIGS["edge"])
    semantic, dist = inputs(G)
    seen = {}
    G.up_0.norm_1.register_forward_hook(lambda m, i, o: seen.setdefault(len(seen), o))
    run(G, semantic, dist, fast=False)
    run(G, semantic, dist, fast=True)
    plain, fast = seen[0], seen[1]
    assert (fast - plain).abs().max() < FP32_TOL
    assert fast.min() < -1e-3  # leaky_relu did not run in place on it


@pytest.mark.parametrize("norm", ["spade", "clade-icpe"])
def test_train_mode_is_unchanged(norm):
    """Training never takes the fast path: same outputs, gradients and running statistics."""
    G1 = calibrated(norm, **CONFIGS["edge"])
    G2 = copy.deepcopy(G1)
    G2.fast_eval = False
    semantic, dist = inputs(G1)
    outs, grads = [], []
    for G in (G1, G2):
        G.train()
        out = G(semantic, dist=dist)
        out.square().mean().backward()
        outs.append(out)
        grads.append({n: p.grad for n, p in G.named_parameters()})
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])
    assert all(torch.equal(a, b) for a, b in zip(G1.buffers(), G2.buffers()))


def test_eval_with_autograd_gives_input_gradients():
    G = calibrated("clade", **CONFIGS["edge"])
    semantic, dist = inputs(G)
    semantic.requires_grad_(True)
    G(semantic).sum().backward()
    assert semantic.grad is not None and semantic.grad.abs().sum() > 0


def test_syncbatchnorm_conversion_keeps_the_fast_path_exact():
    G = nn.SyncBatchNorm.convert_sync_batchnorm(calibrated("clade", **CONFIGS["edge"])).eval()
    semantic, dist = inputs(G)
    assert (run(G, semantic, dist, fast=True) - run(G, semantic, dist, fast=False)).abs().max() < FP32_TOL


def test_tracing_sees_the_plain_path():
    """fvcore traces with torch.jit; its counts must be those of the plain (official) ops."""
    G = calibrated("clade", **CONFIGS["edge"])
    semantic, _ = inputs(G, n=1)
    with torch.no_grad():
        graph = torch.jit.trace(G, (semantic,), check_trace=False).inlined_graph
    kinds = {node.kind() for node in graph.nodes()}
    assert "aten::_convolution" in kinds and "aten::batch_norm" in kinds


@pytest.mark.parametrize("edge", [False, True])
def test_onehot_conv_equals_conv(edge):
    classes, k = 7, 3
    conv = nn.Conv2d(classes + edge, 16, k, padding=1)
    label = torch.randint(0, classes, (2, 9, 11))
    onehot = F.one_hot(label, classes).permute(0, 3, 1, 2).float()
    edge_map = torch.randint(0, 2, (2, 1, 9, 11)).float() if edge else None
    x = torch.cat([onehot, edge_map], 1) if edge else onehot
    with torch.no_grad():
        fast = onehot_conv(conv, tap_indices(label, k, classes), (9, 11), classes, edge_map)
        assert (fast - conv(x)).abs().max() < 1e-5


def test_soft_semantic_maps_fall_back_to_convolutions():
    G = calibrated("spade", **CONFIGS["edge"])
    semantic, dist = inputs(G)
    soft = semantic.clone()
    soft[:, : G.config.class_nc] = soft[:, : G.config.class_nc] * 0.9 + 0.1 / G.config.class_nc
    cond = Conditioning(soft, G.config.class_nc, has_edge=True)
    assert not cond.one_hot_at(soft.shape[-2:])
    assert Conditioning(semantic, G.config.class_nc, has_edge=True).one_hot_at(semantic.shape[-2:])
    assert (run(G, soft, dist, fast=True) - run(G, soft, dist, fast=False)).abs().max() < FP32_TOL


@pytest.mark.parametrize("norm", ["spade", "clade"])
def test_graph_safe_mode_equals_plain(norm):
    """The mode CUDA graph capture uses (no data-dependent choices): convs stay convs."""
    G = calibrated(norm, **CONFIGS["edge"])
    semantic, dist = inputs(G)
    plain = run(G, semantic, dist, fast=False)
    with graph_safe():
        assert not Conditioning(semantic, G.config.class_nc, has_edge=True).one_hot_at((4, 4))
        fast = run(G, semantic, dist, fast=True)
    assert (fast - plain).abs().max() < FP32_TOL


@pytest.mark.parametrize("norm", ["spade", "clade", "clade-icpe"])
def test_warm_graph_safe_path_reads_no_tensor_values(norm, monkeypatch):
    """CUDA graph capture fails on a host read of a device value (a synchronisation). After
    the warm-up calls ``Accelerated._graphed`` makes, the graph-safe fast path must convert
    no tensor to a Python value: checked here on CPU, where a GPU is not at hand."""
    G = calibrated(norm, **CONFIGS["edge"])
    semantic, dist = inputs(G)
    plain = run(G, semantic, dist, fast=False)
    with graph_safe():
        run(G, semantic, dist, fast=True)   # warm-up: weight and table caches filled

        def host_read(*args, **kwargs):
            raise AssertionError("host read of a tensor value inside the graph-safe fast path")
        with monkeypatch.context() as patch:
            for name in ("__bool__", "item", "tolist", "__int__", "__float__", "__index__"):
                patch.setattr(torch.Tensor, name, host_read)
            captured = run(G, semantic, dist, fast=True)
    assert (captured - plain).abs().max() < FP32_TOL


@pytest.mark.slow
def test_compiled_equals_plain():
    G = calibrated("clade", **CONFIGS["edge"])
    semantic, dist = inputs(G)
    plain = run(G, semantic, dist, fast=False)
    assert (accelerate(G, compile=True)(semantic, dist=dist) - plain).abs().max() < FP32_TOL


def _class_affine_reference(x, label, table, scales, extra, negative_slope):
    c = x.shape[1]
    rows = table[label].permute(0, 3, 1, 2)
    out = x * rows[:, :c] + rows[:, c:2 * c]
    if scales is not None:
        s = scales.permute(0, 3, 1, 2)
        out = out * s[:, :1] + rows[:, 2 * c:] * s[:, 1:]
    out = torch.cat([out, extra], 1)
    return out if negative_slope is None else F.leaky_relu(out, negative_slope)


@pytest.mark.parametrize("icpe", [False, True])
@pytest.mark.parametrize("tile_bytes", [1, 5000, None])   # one row per tile, tiles across images, one tile
def test_class_affine_tiles_equal_one_pass(icpe, tile_bytes):
    gen = torch.Generator().manual_seed(0)
    n, c, h, w, classes = 2, 6, 7, 5, 4
    x = torch.randn(n, c, h, w, generator=gen)
    label = torch.randint(0, classes, (n, h, w), generator=gen)
    table = torch.randn(classes, (3 if icpe else 2) * c, generator=gen)
    scales = torch.rand(n, h, w, 2, generator=gen) + 0.5 if icpe else None
    extra = torch.randn(n, 1, h, w, generator=gen)
    for negative_slope in (None, 0.2):
        out = class_affine(x, label, table, scales=scales, extra=extra, negative_slope=negative_slope,
                           tile_bytes=tile_bytes)
        assert out.shape == (n, c + 1, h, w) and out.is_contiguous(memory_format=torch.channels_last)
        expected = _class_affine_reference(x, label, table, scales, extra, negative_slope)
        assert torch.allclose(out, expected, atol=1e-6)
        traced = _class_affine_expression(x, label, table, scales, extra, negative_slope)   # what compile sees
        assert torch.allclose(traced, expected, atol=1e-6)


@pytest.mark.parametrize("norm", ["clade", "clade-icpe"])
def test_tiled_generator_equals_plain(norm, monkeypatch):
    import models.fast
    monkeypatch.setattr(models.fast, "TILE_BYTES", 64)  # many tiles per map even at 64x64
    G = calibrated(norm, **CONFIGS["edge"])
    semantic, dist = inputs(G)
    plain = run(G, semantic, dist, fast=False)
    assert (run(G, semantic, dist, fast=True) - plain).abs().max() < FP32_TOL


@pytest.mark.parametrize("norm", ["spade", "clade", "clade-icpe"])
def test_fast_path_traces_as_one_graph(norm):
    """torch.compile sees the whole eval fast path as one graph (graph breaks cost recompiles
    per layer and rule out CUDA graphs); no C++ compiler needed to check it."""
    G = calibrated(norm, **CONFIGS["edge"])
    semantic, dist = inputs(G)
    with torch.no_grad():
        explained = torch._dynamo.explain(lambda s, d: G(s, dist=d))(semantic, dist)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
