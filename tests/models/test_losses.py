"""Losses against the official formulas (tzt101/CLADE models/networks/loss.py, pix2pix_model.py)."""
import pytest
import torch
from torch import nn

from models.losses import VGGLoss, feature_matching_loss, gan_loss, kld_loss
from models.vgg import VGG19_FILE, VGG19_URL, VGG19Features, VGGWeightsMissingError, resolve_vgg_weights


def _multiscale(seed, n=2, scales=2, layers=3):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(n, 2 + j, 5 - s, 5 - s, generator=g) for j in range(layers)] for s in range(scales)]


def test_hinge_discriminator_matches_official_min_formula():
    preds = _multiscale(0)
    zero = torch.zeros(())
    real = sum(-torch.mean(torch.min(p[-1] - 1, zero)) for p in preds) / len(preds)
    fake = sum(-torch.mean(torch.min(-p[-1] - 1, zero)) for p in preds) / len(preds)
    assert torch.allclose(gan_loss(preds, True, for_discriminator=True), real, atol=0)
    assert torch.allclose(gan_loss(preds, False, for_discriminator=True), fake, atol=0)


def test_hinge_generator_is_minus_mean_per_scale_averaged():
    preds = _multiscale(1, scales=3)
    expected = sum(-p[-1].mean() for p in preds) / 3
    assert torch.allclose(gan_loss(preds, True, for_discriminator=False), expected)
    with pytest.raises(ValueError, match="aim for real"):
        gan_loss(preds, False, for_discriminator=False)


def test_single_tensor_prediction():
    x = torch.tensor([[-2.0, 0.5], [1.5, 3.0]])
    assert gan_loss(x, True).item() == pytest.approx((3 + 0.5 + 0 + 0) / 4)
    assert gan_loss(x, False).item() == pytest.approx((0 + 1.5 + 2.5 + 4) / 4)


def test_other_gan_modes_follow_official():
    x = torch.randn(2, 1, 3, 3)
    assert torch.allclose(gan_loss(x, True, gan_mode="ls"), ((x - 1) ** 2).mean())
    assert torch.allclose(gan_loss(x, False, gan_mode="original"),
                          nn.functional.binary_cross_entropy_with_logits(x, torch.zeros_like(x)))
    assert torch.allclose(gan_loss(x, False, gan_mode="w"), x.mean())


def test_feature_matching_excludes_prediction_and_divides_by_num_d():
    fake, real = _multiscale(2), _multiscale(3)
    expected = torch.zeros(())
    for i in range(len(fake)):
        for j in range(len(fake[i]) - 1):
            expected += nn.L1Loss()(fake[i][j], real[i][j]) * 10.0 / len(fake)
    assert torch.allclose(feature_matching_loss(fake, real, lambda_feat=10.0), expected)


def test_feature_matching_does_not_train_the_real_branch():
    fake = [[torch.randn(1, 2, 3, 3, requires_grad=True), torch.randn(1, 1, 2, 2)]]
    real = [[torch.randn(1, 2, 3, 3, requires_grad=True), torch.randn(1, 1, 2, 2)]]
    feature_matching_loss(fake, real).backward()
    assert fake[0][0].grad is not None and real[0][0].grad is None


def test_kld_is_summed_official_formula():
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4)
    expected = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    assert torch.allclose(kld_loss(mu, logvar), expected)
    assert kld_loss(torch.zeros(2, 5), torch.zeros(2, 5)).item() == 0.0


class _FakeVGG(nn.Module):
    def forward(self, x):
        return [x * (i + 1) for i in range(5)]


def test_vgg_loss_weights():
    x, y = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    weights = [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]
    expected = sum(w * nn.L1Loss()(x * (i + 1), y * (i + 1)) for i, w in enumerate(weights))
    assert torch.allclose(VGGLoss(_FakeVGG())(x, y), expected)


def test_missing_vgg_weights_message_names_file_url_and_way_out(tmp_path):
    with pytest.raises(VGGWeightsMissingError) as err:
        resolve_vgg_weights(tmp_path / "nowhere.pth")
    msg = str(err.value)
    assert "nowhere.pth" in msg and VGG19_FILE in msg and VGG19_URL in msg
    assert "--vgg-weights" in msg and "--no-vgg" in msg and "checkpoints" in msg


def test_vgg_slices_load_torchvision_layout(tmp_path):
    reference = VGG19Features()
    # A torchvision-style file: 'features.<index>.weight' (+ classifier keys, ignored).
    state = {k.replace(f"slice{i}.", "features.", 1): v.clone().normal_()
             for i in range(1, 6) for k, v in reference.state_dict().items() if k.startswith(f"slice{i}.")}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / VGG19_FILE
    torch.save(state, path)
    vgg = VGG19Features.from_pretrained(path)
    assert torch.equal(vgg.slice5[-2].weight, state["features.28.weight"])
    assert all(not p.requires_grad for p in vgg.parameters())
    outs = vgg(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [64, 128, 256, 512, 512]
    assert [o.shape[-1] for o in outs] == [32, 16, 8, 4, 2]
