"""Losses against the official formulas (tzt101/CLADE models/networks/loss.py, pix2pix_model.py)."""
import pytest
import torch
from torch import nn

from training.losses import (VGGLoss, discriminator_input, discriminator_losses, feature_matching_loss, gan_loss,
                           generator_losses, kld_loss, split_predictions)
from training.recipe import TrainRecipe
from training.vgg import VGG19_FILE, VGG19_URL, VGG19Features, VGGWeightsMissingError, resolve_vgg_weights


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


class _StubG(nn.Module):
    """semantic (+ z) -> image; records what it was given."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)

    def forward(self, semantic, z=None, dist=None):
        self.seen = {"z": z, "dist": dist}
        return torch.tanh(self.conv(semantic))


class _StubD(nn.Module):
    """Two scales of (feature, prediction) on cat(semantic, image)."""

    def __init__(self):
        super().__init__()
        self.feat = nn.Conv2d(5, 4, 1)
        self.pred = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        f = self.feat(x)
        return [[f, self.pred(f)], [f[..., ::2, ::2], self.pred(f[..., ::2, ::2])]]


class _StubE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, image):
        h = self.fc(image.mean((2, 3)))
        return h, h * 0.1


def _step_inputs():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 2, 4, 4, generator=g), torch.rand(2, 3, 4, 4, generator=g) * 2 - 1


def test_generator_losses_terms_follow_the_recipe_and_leave_d_untrained():
    G, D, E = _StubG(), _StubD(), _StubE()
    semantic, real = _step_inputs()
    recipe = TrainRecipe(use_vgg=False, lambda_feat=3.0, lambda_kld=0.5)
    torch.manual_seed(1)
    step = generator_losses(G, D, semantic, real, recipe=recipe, encoder=E, vgg_loss=VGGLoss(_FakeVGG()))
    assert list(step.terms) == ["KLD", "GAN", "GAN_Feat", "VGG"]
    assert G.seen["z"].shape == (2, 4)
    pred_fake, pred_real = split_predictions(D(discriminator_input(semantic, step.fake.detach(), real)))
    assert torch.allclose(step.terms["GAN"], gan_loss(pred_fake, True, for_discriminator=False))
    assert torch.allclose(step.terms["GAN_Feat"], feature_matching_loss(pred_fake, pred_real, 3.0))
    assert torch.allclose(step.terms["VGG"], VGGLoss(_FakeVGG())(step.fake, real) * recipe.lambda_vgg)
    mu, logvar = E(real)
    assert torch.allclose(step.terms["KLD"], kld_loss(mu, logvar) * 0.5)
    assert torch.equal(step.total, sum(step.terms.values()))
    step.total.backward()
    assert all(p.grad is None for p in D.parameters()) and all(p.requires_grad for p in D.parameters())
    assert G.conv.weight.grad is not None and E.fc.weight.grad is not None
    no_feat = generator_losses(G, D, semantic, real, recipe=TrainRecipe(use_vgg=False, use_feat_loss=False))
    assert list(no_feat.terms) == ["GAN"] and G.seen["z"] is None


def test_discriminator_losses_train_d_on_a_detached_fake():
    G, D = _StubG(), _StubD()
    semantic, real = _step_inputs()
    dist = torch.zeros(2, 2, 4, 4)
    step = discriminator_losses(G, D, semantic, real, recipe=TrainRecipe(use_vgg=False), dist=dist)
    assert list(step.terms) == ["D_Fake", "D_real"] and G.seen["dist"] is dist
    pred_fake, pred_real = split_predictions(D(discriminator_input(semantic, step.fake, real)))
    assert torch.allclose(step.terms["D_Fake"], gan_loss(pred_fake, False))
    assert torch.allclose(step.terms["D_real"], gan_loss(pred_real, True))
    step.total.backward()
    assert G.conv.weight.grad is None and D.feat.weight.grad is not None


def test_discriminator_input_puts_fake_first_in_the_asked_dtype_and_layout():
    semantic, real = _step_inputs()
    fake = -real
    x = discriminator_input(semantic, fake, real, dtype=torch.bfloat16, memory_format=torch.channels_last)
    assert x.shape == (4, 5, 4, 4) and x.dtype == torch.bfloat16
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x[:2, 2:], fake.bfloat16()) and torch.equal(x[2:, 2:], real.bfloat16())
    assert torch.equal(x[:2, :2], x[2:, :2])
