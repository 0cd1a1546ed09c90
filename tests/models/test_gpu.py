"""On a GPU the reference model, its fused conversion (fp32, bf16, CUDA graphs) and a training
step compute what they compute on the CPU. Run by ``scripts/gpu_check.sh``; skipped without CUDA."""
import pytest
import torch

from models import fuse_for_inference
from models.fast import accelerate
from tests.models.test_fast_paths import BF16_TOL, CONFIGS, FP32_TOL, calibrated, inputs, reference
from tests.training.test_trainer import TinyScenes, tiny_trainer

pytestmark = pytest.mark.gpu

NORMS = ["spade", "clade", "clade-icpe"]
TRAIN_LOSS_TOL = {False: 1e-3, True: 5e-2}   # relative, fp32 / bf16 autocast (as analysis.speed.train_step)


@pytest.fixture(autouse=True)
def true_fp32():
    """cuDNN convolutions default to TF32 (10-bit mantissa) on Ampere and later: the fp32
    comparisons below need fp32 arithmetic."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("norm", NORMS)
def test_reference_and_fused_on_cuda_equal_the_cpu_reference(norm):
    G = calibrated(norm, **CONFIGS["edge"])
    semantic, dist = inputs(G)
    on_cpu = reference(G, semantic, dist)
    G = G.cuda()
    semantic, dist = semantic.cuda(), dist.cuda()
    assert (reference(G, semantic, dist).cpu() - on_cpu).abs().max() < FP32_TOL
    G_fast = fuse_for_inference(G)
    with torch.no_grad():
        assert (G_fast(semantic, dist=dist).cpu() - on_cpu).abs().max() < FP32_TOL
        assert (G_fast(semantic, dist=dist, dtype=torch.bfloat16).cpu() - on_cpu).abs().max() < BF16_TOL


@pytest.mark.parametrize("dtype, tolerance", [(None, FP32_TOL), (torch.bfloat16, BF16_TOL)])
@pytest.mark.parametrize("norm", NORMS)
def test_cuda_graph_replays_follow_new_inputs(norm, dtype, tolerance):
    G = calibrated(norm, **CONFIGS["edge"]).cuda()
    graphed = accelerate(fuse_for_inference(G), dtype=dtype, cuda_graphs=True)
    for seed in (0, 1, 0):   # capture, then replays with other values in the same shapes
        semantic, dist = (t.cuda() for t in inputs(G, seed=seed))
        assert (graphed(semantic, dist=dist) - reference(G, semantic, dist)).abs().max() < tolerance


@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("norm", NORMS)
def test_training_step_on_cuda_gives_the_cpu_losses(norm, amp):
    batch = torch.utils.data.default_collate([TinyScenes()[i] for i in range(2)])
    on_cpu = tiny_trainer(norm)
    on_cuda = tiny_trainer(norm, amp=amp, device="cuda")
    for name, net in on_cpu.networks().items():   # the same initial weights (and spectral-norm vectors)
        on_cuda.networks()[name].load_state_dict(net.state_dict())
    expected = on_cpu.train_step(batch)
    found = on_cuda.train_step(batch)
    assert found.keys() == expected.keys()
    tolerance = TRAIN_LOSS_TOL[amp]
    assert all(abs(found[k] - expected[k]) <= tolerance * max(1.0, abs(expected[k])) for k in expected), \
        (found, expected)
