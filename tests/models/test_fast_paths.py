"""The fused inference model (models.fusion) computes the reference model's function."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from data.labels import make_semantic
from models import SPADE, CLADE, build_generator, fuse_for_inference
from models.fast import _class_affine_expression, accelerate, class_affine, graph_safe, onehot_conv, onehot_conv_rows, tap_indices
from models.fusion import FusedCLADE, FusedConditioning, FusedGenerator, FusedSPADE

FP32_TOL = 1e-4
BF16_TOL = 5e-2  # analysis.speed.variants.BF16_TOLERANCE: bf16 output vs fp32 reference output (tanh range [-1, 1])

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


def reference(G, semantic, dist):
    with torch.no_grad():
        return G.eval()(semantic, dist=dist)


@pytest.mark.parametrize("norm", ["spade", "clade", "clade-icpe"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_fused_equals_reference(norm, config):
    G = calibrated(norm, **CONFIGS[config])
    semantic, dist = inputs(G)
    plain = reference(G, semantic, dist)
    G_fast = fuse_for_inference(G)
    fast = G_fast(semantic, dist=dist)
    assert plain.abs().max() < 0.99, "saturated output: the comparison would be vacuous"
    assert (fast - plain).abs().max() < FP32_TOL
    assert fast.dtype == plain.dtype and fast.is_contiguous()
    bf16 = G_fast(semantic, dist=dist, dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32
    assert (bf16 - plain).abs().max() < BF16_TOL
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = G_fast(semantic, dist=dist)
    assert (autocast.float() - plain).abs().max() < BF16_TOL


def test_vae_generator_is_fused_exactly():
    G = calibrated("spade", use_vae=True, **CONFIGS["edge"])
    semantic, dist = inputs(G)
    z = torch.randn(semantic.shape[0], G.config.z_dim)
    with torch.no_grad():
        plain = G(semantic, z=z)
    assert (fuse_for_inference(G)(semantic, z=z) - plain).abs().max() < FP32_TOL


@pytest.mark.parametrize("norm", ["spade", "clade", "clade-icpe"])
def test_built_in_layers_are_fused(norm):
    G_fast = fuse_for_inference(calibrated(norm, **CONFIGS["edge"]))
    assert type(G_fast) is FusedGenerator
    assert type(G_fast.up_0.norm_0) is (FusedSPADE if norm == "spade" else FusedCLADE)


def test_fusion_leaves_the_reference_unchanged_and_independent():
    G = calibrated("spade", **CONFIGS["edge"])
    semantic, dist = inputs(G)
    state = copy.deepcopy(G.state_dict())
    G_fast = fuse_for_inference(G)
    before = G_fast(semantic, dist=dist)
    assert all(torch.equal(state[k], v) for k, v in G.state_dict().items())
    assert G.head_0.norm_0.mlp_gamma.weight.requires_grad  # G still trains
    with torch.no_grad():
        for p in G.parameters():
            p.mul_(1.05)
    assert torch.equal(G_fast(semantic, dist=dist), before)  # conversion reads G's weights once
    assert (reference(G, semantic, dist) - before).abs().max() > 1e-3
    assert (fuse_for_inference(G)(semantic, dist=dist) - reference(G, semantic, dist)).abs().max() < FP32_TOL


def test_reference_refuses_a_compute_dtype():
    G = calibrated("clade", **CONFIGS["edge"])
    semantic, dist = inputs(G)
    with pytest.raises(ValueError, match="fuse_for_inference"):
        G(semantic, dtype=torch.bfloat16)


class ShiftedSPADE(SPADE):
    """A user subclass: the fused model must not replace its modulation with SPADE's."""

    def modulation(self, cond, size):
        scale, shift = super().modulation(cond, size)
        return scale * 0.5, shift + 1.0


class ConstantCLADE(CLADE):
    def modulation(self, cond, size):
        gamma, beta = super().modulation(cond, size)
        return torch.ones_like(gamma), beta


@pytest.mark.parametrize("norm,cls", [("spade", ShiftedSPADE), ("clade", ConstantCLADE)])
def test_subclass_overriding_modulation_stays_unfused(norm, cls):
    G = calibrated(norm, **CONFIGS["edge"])
    original = reference(G, *inputs(G))
    G.up_1.norm_0.__class__ = cls   # same weights, the subclass's modulation
    semantic, dist = inputs(G)
    plain = reference(G, semantic, dist)
    assert (plain - original).abs().max() > 1e-3
    G_fast = fuse_for_inference(G)
    assert type(G_fast.up_1.norm_0) is cls and type(G_fast.up_0.norm_0) is not cls
    assert (G_fast(semantic, dist=dist) - plain).abs().max() < FP32_TOL
    assert (G_fast(semantic, dist=dist, dtype=torch.bfloat16) - plain).abs().max() < BF16_TOL


def test_modulation_override_stays_unfused():
    G = calibrated("clade", **CONFIGS["edge"])
    semantic, dist = inputs(G)
    normal = reference(G, semantic, dist)
    G.up_1.norm_0.modulation_override = lambda cond, size: (1.0, 0.0)
    plain = reference(G, semantic, dist)
    fast = fuse_for_inference(G)(semantic, dist=dist)
    assert (fast - plain).abs().max() < FP32_TOL
    assert (fast - normal).abs().max() > 1e-3


@pytest.mark.parametrize("norm", ["spade", "clade-icpe"])
def test_channels_last_input_and_accelerate(norm):
    G = calibrated(norm, **CONFIGS["edge"])
    semantic, dist = inputs(G)
    plain = reference(G, semantic, dist)
    G_fast = fuse_for_inference(G)
    assert (G_fast(semantic.contiguous(memory_format=torch.channels_last), dist=dist) - plain).abs().max() < FP32_TOL
    assert (accelerate(G_fast)(semantic, dist=dist) - plain).abs().max() < FP32_TOL
    assert (accelerate(G_fast, dtype=torch.bfloat16)(semantic, dist=dist) - plain).abs().max() < BF16_TOL


def test_eval_with_autograd_gives_input_gradients():
    G = calibrated("clade", **CONFIGS["edge"])
    semantic, dist = inputs(G)
    semantic.requires_grad_(True)
    G(semantic).sum().backward()
    assert semantic.grad is not None and semantic.grad.abs().sum() > 0


def test_syncbatchnorm_conversion_is_fused_exactly():
    G = nn.SyncBatchNorm.convert_sync_batchnorm(calibrated("clade", **CONFIGS["edge"])).eval()
    semantic, dist = inputs(G)
    assert (fuse_for_inference(G)(semantic, dist=dist) - reference(G, semantic, dist)).abs().max() < FP32_TOL


def test_tracing_sees_the_reference_ops():
    """fvcore traces with torch.jit; its counts must be those of the reference (official) ops."""
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
        fast = onehot_conv(onehot_conv_rows(conv.weight, conv.bias, classes), tap_indices(label, k, classes), (9, 11))
        if edge:
            fast = fast + F.conv2d(edge_map, conv.weight[:, classes:], padding=1)
        assert (fast - conv(x)).abs().max() < 1e-5


def test_soft_semantic_maps_fall_back_to_convolutions():
    G = calibrated("spade", **CONFIGS["edge"])
    semantic, dist = inputs(G)
    soft = semantic.clone()
    soft[:, : G.config.class_nc] = soft[:, : G.config.class_nc] * 0.9 + 0.1 / G.config.class_nc
    assert not FusedConditioning(soft, G.config.class_nc, has_edge=True).one_hot_at(soft.shape[-2:])
    assert FusedConditioning(semantic, G.config.class_nc, has_edge=True).one_hot_at(semantic.shape[-2:])
    assert (fuse_for_inference(G)(soft, dist=dist) - reference(G, soft, dist)).abs().max() < FP32_TOL


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
@pytest.mark.parametrize("size", [(8, 8), (7, 5), (24, 40), (64, 96)])
def test_index_resize_picks_the_pixels_interpolate_picks(size, dtype):
    t = (torch.rand(2, 3, 24, 40) * 100).to(dtype)
    picked = FusedConditioning(t, 3, has_edge=False).resize(t, size)
    assert torch.equal(picked, F.interpolate(t.float(), size=size, mode="nearest").to(dtype))
    assert picked.dtype == dtype


@pytest.mark.parametrize("norm", ["spade", "clade"])
def test_graph_safe_mode_equals_reference(norm):
    """The mode CUDA graph capture uses (no data-dependent choices): convs stay convs."""
    G = calibrated(norm, **CONFIGS["edge"])
    semantic, dist = inputs(G)
    plain = reference(G, semantic, dist)
    G_fast = fuse_for_inference(G)
    with graph_safe():
        assert not FusedConditioning(semantic, G.config.class_nc, has_edge=True).one_hot_at((4, 4))
        fast = G_fast(semantic, dist=dist)
    assert (fast - plain).abs().max() < FP32_TOL


@pytest.mark.parametrize("norm", ["spade", "clade", "clade-icpe"])
def test_warm_graph_safe_path_reads_no_tensor_values(norm, monkeypatch):
    """CUDA graph capture fails on a host read of a device value (a synchronisation). After
    the warm-up calls ``Accelerated._graphed`` makes, the graph-safe fused model must convert
    no tensor to a Python value: checked here on CPU, where a GPU is not at hand."""
    G = calibrated(norm, **CONFIGS["edge"])
    semantic, dist = inputs(G)
    plain = reference(G, semantic, dist)
    G_fast = fuse_for_inference(G)
    with graph_safe():
        G_fast(semantic, dist=dist)   # warm-up: prepared weights and tables

        def host_read(*args, **kwargs):
            raise AssertionError("host read of a tensor value inside the graph-safe fused model")
        with monkeypatch.context() as patch:
            for name in ("__bool__", "item", "tolist", "__int__", "__float__", "__index__"):
                patch.setattr(torch.Tensor, name, host_read)
            captured = G_fast(semantic, dist=dist)
    assert (captured - plain).abs().max() < FP32_TOL


@pytest.mark.slow
def test_compiled_equals_reference():
    G = calibrated("clade", **CONFIGS["edge"])
    semantic, dist = inputs(G)
    plain = reference(G, semantic, dist)
    assert (accelerate(fuse_for_inference(G), compile=True)(semantic, dist=dist) - plain).abs().max() < FP32_TOL


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
def test_tiled_generator_equals_reference(norm, monkeypatch):
    import models.fast
    monkeypatch.setattr(models.fast, "TILE_BYTES", 64)  # many tiles per map even at 64x64
    G = calibrated(norm, **CONFIGS["edge"])
    semantic, dist = inputs(G)
    assert (fuse_for_inference(G)(semantic, dist=dist) - reference(G, semantic, dist)).abs().max() < FP32_TOL


@pytest.mark.parametrize("norm", ["spade", "clade", "clade-icpe"])
def test_fused_model_traces_as_one_graph(norm):
    """torch.compile sees the whole fused model as one graph (graph breaks cost recompiles
    per layer and rule out CUDA graphs); no C++ compiler needed to check it."""
    G_fast = fuse_for_inference(calibrated(norm, **CONFIGS["edge"]))
    semantic, dist = inputs(G_fast)
    explained = torch._dynamo.explain(lambda s, d: G_fast(s, dist=d))(semantic, dist)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
