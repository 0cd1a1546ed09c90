"""How to train: the official SPADE / CLADE training options, and the matching discriminator.

    recipe = TrainRecipe(use_vgg=False, lr=1e-4)       # everything else official
    d_config = discriminator_config_for(g_config, ndf=32)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from training.losses import GAN_MODES
from models.presets import DiscriminatorConfig, GeneratorConfig


@dataclass
class TrainRecipe:
    """How to train; defaults are the official SPADE/CLADE training options."""

    gan_mode: str = "hinge"          # adversarial loss: hinge | ls | original | w
    lambda_feat: float = 10.0        # weight of discriminator feature matching
    use_feat_loss: bool = True       # official --no_ganFeat_loss turns it off
    lambda_vgg: float = 10.0         # weight of the VGG19 perceptual loss
    use_vgg: bool = True             # official --no_vgg_loss turns it off; needs local weights
    lambda_kld: float = 0.05         # weight of the KL term (only when the generator has use_vae)
    lr: float = 2e-4                 # base learning rate; with TTUR G gets lr/2, D gets 2*lr
    ttur: bool = True                # two time-scale update rule (official default; --no_TTUR)
    beta1: float | None = None       # Adam beta1; None = 0.0 with TTUR, 0.5 without (official)
    beta2: float | None = None       # Adam beta2; None = 0.9 with TTUR, 0.999 without (official)
    niter: int = 0                   # epochs at the initial lr before the epoch-based decay
    niter_decay: int = 0             # epochs of linear decay to 0 after niter (0 = none, official)
    decay_start_step: int = 0        # step-based alternative: iteration where decay starts
    decay_steps: int = 0             # iterations of linear decay to 0 (0 = none)
    D_steps_per_G: int = 1           # iterations per generator step (D steps every iteration)
    ema: bool = False                # keep an EMA of G; exported and used for evaluation
    ema_decay: float = 0.999         # EMA weight of the old average per generator step
    bn_estimation_batches: int = 0   # evaluate / export G with BatchNorm statistics re-estimated on this many
                                     # fixed training batches (0 = the running averages, official)
    batch_size: int = 1              # images per process per step (official --batchSize 1)
    seed: int = 0                    # weights, data order and noise all follow from it
    amp: bool = True                 # bf16 autocast where bf16 is native: CUDA, CPUs with AMX / AVX512-BF16
    channels_last: bool = True       # NHWC memory format (what cuDNN tensor cores and oneDNN prefer)
    spectral_input_scaling: bool = True  # conv(x / sigma, W) where x is smaller than W (models.spectral)
    compile: bool = False            # torch.compile G and D

    def __post_init__(self):
        if self.gan_mode not in GAN_MODES:
            raise ValueError(f"gan_mode={self.gan_mode!r}; expected one of {list(GAN_MODES)}")
        if self.batch_size < 1 or self.D_steps_per_G < 1:
            raise ValueError(f"batch_size={self.batch_size} and D_steps_per_G={self.D_steps_per_G} "
                             f"must be at least 1")
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2 ** 63):
            raise ValueError(f"seed={self.seed!r}; expected an integer from 0 to 2**63 - 1 (torch's seed range)")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr}; expected a positive number (official 0.0002)")
        for name in ("lambda_feat", "lambda_vgg", "lambda_kld"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}={value}; expected 0 or more")
        for name in ("beta1", "beta2", "ema_decay"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"{name}={value}; expected a value in [0, 1)")
        for name in ("niter", "niter_decay", "decay_start_step", "decay_steps", "bn_estimation_batches"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}; expected 0 or more")
        if self.niter_decay and self.decay_steps:
            raise ValueError("choose one lr decay: epoch-based (niter/niter_decay) or step-based "
                             "(decay_start_step/decay_steps), not both")

    @property
    def betas(self) -> tuple[float, float]:
        b1 = self.beta1 if self.beta1 is not None else (0.0 if self.ttur else 0.5)
        b2 = self.beta2 if self.beta2 is not None else (0.9 if self.ttur else 0.999)
        return float(b1), float(b2)

    @property
    def lr_G(self) -> float:
        return self.lr / 2 if self.ttur else self.lr

    @property
    def lr_D(self) -> float:
        return self.lr * 2 if self.ttur else self.lr

    def lr_factor(self, *, step: int, epoch: int) -> float:
        """Multiplier of the initial lr after ``step`` iterations / ``epoch`` finished epochs."""
        if self.niter_decay > 0:   # official: lr -= lr0 / niter_decay at the end of each epoch > niter
            return max(0.0, 1.0 - max(0, epoch - self.niter) / self.niter_decay)
        if self.decay_steps > 0:
            return max(0.0, 1.0 - max(0, step - self.decay_start_step) / self.decay_steps)
        return 1.0


def recipe_from_dict(d: dict) -> TrainRecipe:
    """TrainRecipe from a (possibly older) dict, ignoring unknown keys."""
    valid = {f.name for f in fields(TrainRecipe)}
    return TrainRecipe(**{k: v for k, v in d.items() if k in valid})


def check_batch_norm_batch(g_config, batch_size: int) -> None:
    """ValueError naming --crop_size and --batch-size when the generator's BatchNorm layers would
    see one value per channel in training (batch 1 at a 1x1 first layer): torch refuses those."""
    sh, sw = g_config.latent_size
    if g_config.param_free_norm == "batch" and batch_size * sh * sw < 2:
        raise ValueError(f"--crop_size {g_config.crop_size} at --batch-size {batch_size}: the generator starts at "
                         f"{sh}x{sw} pixels, where BatchNorm in training sees a single value per channel; use "
                         f"--batch-size 2 or more, --crop_size {2 * g_config.crop_size} or more, or "
                         f"--param_free_norm instance")


def discriminator_config_for(g_config: GeneratorConfig, **overrides) -> DiscriminatorConfig:
    """The official discriminator for a generator's label layout."""
    return DiscriminatorConfig(label_nc=g_config.label_nc,
                               contain_dontcare_label=g_config.contain_dontcare_label,
                               no_instance=g_config.no_instance, **overrides)
