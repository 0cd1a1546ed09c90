"""The official SPADE / CLADE training losses, as plain functions.

The two step losses are what the trainer optimises and what ``analysis.costs.layers`` counts:

    g = generator_losses(G, D, semantic, real, recipe=recipe, dist=icpe, vgg_loss=vgg)
    g.total.backward()      # g.terms: GAN, GAN_Feat, VGG (+ KLD); g.fake: the generated batch
    d = discriminator_losses(G, D, semantic, real, recipe=recipe, dist=icpe)

Discriminator outputs follow ``MultiscaleDiscriminator``: a list (one entry per scale) of
lists of features whose last element is the patch prediction.

    d_fake, d_real = gan_loss(pred_fake, False), gan_loss(pred_real, True)   # D step
    g_gan = gan_loss(pred_fake, True, for_discriminator=False)               # G step
    g_feat = feature_matching_loss(pred_fake, pred_real, lambda_feat=10.0)

All losses are computed in float32 (predictions under bf16 autocast are upcast first).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

GAN_MODES = ("hinge", "ls", "original", "w")


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message says which step and what was applied."""


def _single_gan_loss(pred: torch.Tensor, target_is_real: bool, for_discriminator: bool,
                     gan_mode: str) -> torch.Tensor:
    pred = pred.float()
    if gan_mode == "hinge":
        if not for_discriminator:
            if not target_is_real:
                raise ValueError("the generator's hinge loss must aim for real (target_is_real=True)")
            return -pred.mean()
        # -mean(min(x - 1, 0)) for real, -mean(min(-x - 1, 0)) for fake
        return F.relu(1 - pred).mean() if target_is_real else F.relu(1 + pred).mean()
    if gan_mode == "ls":
        return F.mse_loss(pred, torch.full_like(pred, float(target_is_real)))
    if gan_mode == "original":
        return F.binary_cross_entropy_with_logits(pred, torch.full_like(pred, float(target_is_real)))
    if gan_mode == "w":
        return -pred.mean() if target_is_real else pred.mean()
    raise ValueError(f"unknown gan_mode {gan_mode!r}; expected one of {list(GAN_MODES)}")


def gan_loss(preds, target_is_real: bool, for_discriminator: bool = True,
             gan_mode: str = "hinge") -> torch.Tensor:
    """Adversarial loss averaged over the discriminator scales (official ``GANLoss``).

    ``preds``: a tensor, or the multiscale list of feature lists (the last feature of each
    scale is used). Hinge (official default): D real ``mean(relu(1 - x))``, D fake
    ``mean(relu(1 + x))``, G ``-mean(x)``; each scale's loss is a mean over its patches.
    """
    if isinstance(preds, torch.Tensor):
        return _single_gan_loss(preds, target_is_real, for_discriminator, gan_mode)
    losses = [_single_gan_loss(p[-1] if isinstance(p, (list, tuple)) else p, target_is_real,
                               for_discriminator, gan_mode) for p in preds]
    return torch.stack(losses).sum() / len(losses)


def feature_matching_loss(feats_fake, feats_real, lambda_feat: float = 10.0) -> torch.Tensor:
    """Discriminator feature matching (official ``GAN_Feat``).

    Sum over scales i and intermediate layers j (the prediction excluded) of
    ``L1(fake[i][j], real[i][j].detach()) * lambda_feat / num_D``.
    """
    num_d = len(feats_fake)
    total = feats_fake[0][0].new_zeros((), dtype=torch.float32)
    for fake_scale, real_scale in zip(feats_fake, feats_real):
        for fake, real in zip(fake_scale[:-1], real_scale[:-1]):
            total = total + F.l1_loss(fake.float(), real.detach().float()) * (lambda_feat / num_d)
    return total


def kld_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) summed over batch and dimensions (official ``KLDLoss``)."""
    mu, logvar = mu.float(), logvar.float()
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


class VGGLoss(nn.Module):
    """Perceptual loss: weighted L1 between VGG19 features (weights 1/32, 1/16, 1/8, 1/4, 1).

    ``vgg`` is a :class:`training.vgg.VGG19Features` (or any module returning five feature
    maps). Multiply by ``lambda_vgg`` yourself, as the official code does.
    """

    weights = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)

    def __init__(self, vgg: nn.Module):
        super().__init__()
        self.vgg = vgg

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_feats, y_feats = self.vgg(x), self.vgg(y)
        total = x.new_zeros((), dtype=torch.float32)
        for w, xf, yf in zip(self.weights, x_feats, y_feats):
            total = total + w * F.l1_loss(xf.float(), yf.detach().float())
        return total


@dataclass
class StepLosses:
    """Named loss terms of one step (each already weighted), their sum and the fake batch."""

    terms: dict[str, torch.Tensor]
    total: torch.Tensor
    fake: torch.Tensor


def encode(encoder: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VAE style code: ``(z, mu, logvar)`` with ``z = mu + eps * exp(logvar / 2)`` (official)."""
    mu, logvar = encoder(image)
    std = torch.exp(0.5 * logvar.float())
    z = torch.randn_like(std) * std + mu.float()
    return z, mu, logvar


def discriminator_input(semantic: torch.Tensor, fake: torch.Tensor, real: torch.Tensor, *,
                        dtype: torch.dtype | None = None,
                        memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """``cat([semantic, fake | real])``: fake and real in one batch, as the official D sees them.

    One batch gives both halves the same normalisation path. ``dtype``: build it in the
    compute dtype (bf16 under autocast), which D's first conv casts to anyway (labels are
    exact in bf16): half the bytes to concatenate and pool, no cast copy (measured ~7% of an
    ade20k batch-1 iteration on CPU).
    """
    dtype = dtype or semantic.dtype
    semantic = semantic.to(dtype)
    fake_and_real = torch.cat([torch.cat([semantic, semantic], 0),
                               torch.cat([fake.to(dtype), real.to(dtype)], 0)], 1)
    return fake_and_real.contiguous(memory_format=memory_format)


def split_predictions(preds):
    """D outputs on ``cat(fake, real)`` -> (fake part, real part), per scale and feature."""
    fake = [[t[: t.shape[0] // 2] for t in scale] for scale in preds]
    real = [[t[t.shape[0] // 2:] for t in scale] for scale in preds]
    return fake, real


@contextlib.contextmanager
def _frozen(module: nn.Module):
    """``module``'s parameters get no gradient inside the block (their gradients would be discarded)."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


def generator_losses(G: nn.Module, D: nn.Module, semantic: torch.Tensor, real: torch.Tensor, *,
                     recipe, dist: torch.Tensor | None = None, encoder: nn.Module | None = None,
                     vgg_loss: nn.Module | None = None, dtype: torch.dtype | None = None,
                     memory_format: torch.memory_format = torch.contiguous_format) -> StepLosses:
    """Official ``compute_generator_loss``: GAN + GAN_Feat + VGG (+ KLD when ``encoder``).

    Runs the networks: ``encoder`` (the VAE's, if any) on ``real``, ``G`` on ``semantic``
    (and ``dist``, the ICPE map), ``D`` (frozen: no parameter gradients) on
    :func:`discriminator_input`. ``recipe``: a ``training.recipe.TrainRecipe`` (gan_mode,
    lambda_feat / use_feat_loss, lambda_vgg, lambda_kld); ``vgg_loss``: a :class:`VGGLoss`,
    or None for no VGG term. ``dtype`` / ``memory_format``: of the discriminator input.
    """
    terms = {}
    z = None
    if encoder is not None:
        z, mu, logvar = encode(encoder, real)
        terms["KLD"] = kld_loss(mu, logvar) * recipe.lambda_kld
    fake = G(semantic, z=z, dist=dist)
    with _frozen(D):
        preds = D(discriminator_input(semantic, fake, real, dtype=dtype, memory_format=memory_format))
    pred_fake, pred_real = split_predictions(preds)
    terms["GAN"] = gan_loss(pred_fake, True, for_discriminator=False, gan_mode=recipe.gan_mode)
    if recipe.use_feat_loss:
        terms["GAN_Feat"] = feature_matching_loss(pred_fake, pred_real, recipe.lambda_feat)
    if vgg_loss is not None:
        terms["VGG"] = vgg_loss(fake, real) * recipe.lambda_vgg
    return StepLosses(terms, sum(terms.values()), fake)


def discriminator_losses(G: nn.Module, D: nn.Module, semantic: torch.Tensor, real: torch.Tensor, *,
                         recipe, dist: torch.Tensor | None = None, encoder: nn.Module | None = None,
                         dtype: torch.dtype | None = None,
                         memory_format: torch.memory_format = torch.contiguous_format) -> StepLosses:
    """Official ``compute_discriminator_loss``: D_Fake + D_real on a freshly generated fake.

    ``encoder`` and ``G`` run without gradients; ``D`` sees :func:`discriminator_input`.
    Arguments as in :func:`generator_losses`.
    """
    with torch.no_grad():
        z = encode(encoder, real)[0] if encoder is not None else None
        fake = G(semantic, z=z, dist=dist)
    preds = D(discriminator_input(semantic, fake.detach(), real, dtype=dtype, memory_format=memory_format))
    pred_fake, pred_real = split_predictions(preds)
    terms = {"D_Fake": gan_loss(pred_fake, False, gan_mode=recipe.gan_mode),
             "D_real": gan_loss(pred_real, True, gan_mode=recipe.gan_mode)}
    return StepLosses(terms, sum(terms.values()), fake)
