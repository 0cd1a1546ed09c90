"""BatchNorm statistics re-estimated for evaluation: exact batch averages, nothing else touched."""
import pytest
import torch
from torch import nn

from models import build_generator_from_config
from models.presets import generator_config
from training.batch_norm_stats import batch_norm_layers, estimate_batch_norm


class Net(nn.Module):
    """conv -> BatchNorm -> conv, called like a generator: ``net(semantic, dist=None)``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, affine=False)
        self.out = nn.Conv2d(4, 3, 1)

    def forward(self, semantic, dist=None):
        return self.out(self.bn(self.conv(semantic)))


def _batches(n=3):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(2, 3, 5, 5, generator=g) * (k + 1) + k, None) for k in range(n)]


def test_statistics_are_the_mean_over_batches_of_each_batch_statistics():
    net = Net().train()
    for semantic, _ in _batches():      # running averages of some other data, as after training
        net(semantic * 3)
    estimated = estimate_batch_norm(net, _batches())
    with torch.no_grad():
        features = [net.conv(semantic).double() for semantic, _ in _batches()]
    mean = torch.stack([f.mean((0, 2, 3)) for f in features]).mean(0)
    var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in features]).mean(0)
    # float32 sums of 50 values per channel and batch: relative error of order 50 * 2**-24
    torch.testing.assert_close(estimated.bn.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(estimated.bn.running_var.double(), var, rtol=1e-5, atol=1e-6)
    assert not estimated.training and estimated.bn.momentum == net.bn.momentum
    # eval-mode output normalises with them
    x = _batches(1)[0][0]
    expected = net.out((net.conv(x) - mean.float()[:, None, None]) / (var.float()[:, None, None] + net.bn.eps).sqrt())
    torch.testing.assert_close(estimated(x), expected, rtol=1e-5, atol=1e-5)


def test_the_given_generator_and_the_global_random_stream_are_untouched():
    net = Net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(123)
    estimate_batch_norm(net, _batches())
    drawn = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(drawn, torch.rand(3))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()) and net.training


def test_spectral_norm_power_iteration_does_not_move():
    config = generator_config("custom", "clade", label_nc=3, ngf=4, crop_size=32, no_instance=True)
    generator = build_generator_from_config(config, "cpu")
    semantic = torch.zeros(2, 3, 32, 32)
    semantic[:, 0, :16], semantic[:, 1, 16:] = 1, 1
    estimated = estimate_batch_norm(generator, [(semantic, None)])
    spectral = [k for k in generator.state_dict() if k.endswith(("weight_u", "weight_v"))]
    assert spectral and batch_norm_layers(generator)
    assert all(torch.equal(estimated.state_dict()[k], generator.state_dict()[k]) for k in spectral)
    assert any(not torch.equal(estimated.state_dict()[k], generator.state_dict()[k])
               for k in estimated.state_dict() if k.endswith("running_var"))


def test_without_batch_norm_the_generator_itself_is_returned():
    net = Net()
    net.bn = nn.InstanceNorm2d(4)
    assert estimate_batch_norm(net, []) is net


def test_no_batches_and_sync_batch_norm_are_refused():
    with pytest.raises(ValueError, match="no batches"):
        estimate_batch_norm(Net(), [])
    net = Net()
    net.bn = nn.SyncBatchNorm(4, affine=False)
    with pytest.raises(ValueError, match="SyncBatchNorm.*bn_estimation_batches=0"):
        estimate_batch_norm(net, _batches())
