"""GAN trainer for SPADE / CLADE / CLADE-ICPE: the official recipe, resumable, DDP-ready.

    trainer = Trainer(g_config=generator_config("synthetic", "clade", ngf=16),
                      recipe=TrainRecipe(use_vgg=False))
    trainer.fit(SyntheticScenes(1000), steps=300, out_dir="runs/demo")
    trainer.export_generator("checkpoints/clade")       # official latest_net_G.pth

One iteration is the official one (``train.py`` + ``Pix2PixTrainer``): a generator step
(hinge GAN + discriminator feature matching + VGG [+ KLD]) every ``D_steps_per_G``
iterations, then a discriminator step on ``cat(fake.detach(), real)`` in one batch with a
freshly generated fake. Under ``torchrun`` (``torch.distributed`` initialised before the
Trainer is built) G, E and D are wrapped in DistributedDataParallel; rank 0 logs and writes.
"""
from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from data.labels import check_label_range, make_semantic
from data.synthetic import SYNTHETIC_LABEL_NC, SyntheticScenes
from fileio import append_line, atomic_path, write_text_atomic

from . import build_encoder, build_generator_from_config
from .checkpoint import save_generator_dir
from .discriminator import MultiscaleDiscriminator
from .fast import native_bf16
from .init import init_official
from .losses import GAN_MODES, VGGLoss, feature_matching_loss, gan_loss, kld_loss
from .presets import DiscriminatorConfig, GeneratorConfig
from .spectral import set_input_scaling
from .vgg import VGG19Features

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "clade-toolkit-trainer-v1"
AMP_DTYPE = torch.bfloat16  # autocast compute dtype of TrainRecipe.amp


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


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; training stopped before applying it."""


# ----------------------------------------------------------------------------------------------
# Distributed setup, data order

@dataclass
class DistInfo:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> DistInfo:
    """Initialise torch.distributed from torchrun's environment (no-op for one process).

    nccl on CUDA (one GPU per local rank), gloo on CPU. Multi-node runs need nothing more
    than torchrun's rendezvous flags (``--nnodes``, ``--rdzv-endpoint``...).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if world_size <= 1:
        return DistInfo(device=device or ("cuda" if use_cuda else "cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = f"cuda:{local_rank}"
    else:
        dev = "cpu"
        # Processes on one machine share its cores.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, local_rank, world_size, dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled per epoch from ``seed``) that can start an epoch part-way.

    Works without a process group when ``num_replicas``/``rank`` are given, so one process
    and N processes use the same data order logic.
    """

    def __init__(self, dataset, *, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Next iteration yields epoch ``epoch``'s order from its ``start``-th sample on."""
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return self.num_samples - self.start


def make_loader(dataset: Dataset, *, batch_size: int = 1, seed: int = 0, rank: int = 0,
                world_size: int = 1, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Shuffled, drop-last loader whose order depends only on (seed, epoch, rank)."""
    sampler = ResumableSampler(dataset, num_replicas=world_size, rank=rank, seed=seed)
    if sampler.num_samples < batch_size:
        raise ValueError(f"the dataset has {len(dataset)} samples ({sampler.num_samples} per process "
                         f"for {world_size} processes); a batch needs {batch_size}")
    # A private generator: creating iterators must not consume the global RNG (resume exactness).
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=True, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed))


def dataset_class_nc(dataset) -> int | None:
    """Number of class ids (label_nc + dontcare) a dataset can emit, when it declares it."""
    preset = getattr(dataset, "preset", None)           # data.datasets.PairedDataset
    if preset is not None and hasattr(preset, "label_nc"):
        return preset.label_nc + int(preset.contain_dontcare_label)
    return SYNTHETIC_LABEL_NC + 1 if isinstance(dataset, SyntheticScenes) else None


def check_dataset_labels(dataset, config) -> None:
    """Reject a dataset whose class ids do not fit ``config`` before training starts.

    Runs the dataset's own file scan when it has one (``scan()``: unreadable files, unknown
    raw values). If the dataset declares at most ``config.class_nc`` classes it fits;
    otherwise every sample is read. Raises ValueError naming the file and the value.
    """
    if callable(getattr(dataset, "scan", None)):
        dataset.scan()
    declared = dataset_class_nc(dataset)
    if declared is not None and declared <= config.class_nc:
        return
    for i in range(len(dataset)):
        item = dataset[i]
        check_label_range(item["label"], config.class_nc,
                          source=f"label map of {item.get('path', f'sample #{i}')!r}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    """All RNG states of this process, as tensors and plain lists (loadable with weights_only)."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    kind, key, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ----------------------------------------------------------------------------------------------
# Sample grids

def label_palette(class_nc: int) -> torch.Tensor:
    """Fixed [class_nc, 3] colours in [0, 1] (seeded, so runs are comparable)."""
    g = torch.Generator().manual_seed(1234)
    return torch.rand(class_nc, 3, generator=g) * 0.8 + 0.2


def colorize_labels(label: torch.Tensor, class_nc: int) -> torch.Tensor:
    """[N, 1, H, W] class ids -> [N, 3, H, W] RGB in [0, 1]."""
    colours = label_palette(class_nc)[label[:, 0].long().clamp(0, class_nc - 1).cpu()]
    return colours.permute(0, 3, 1, 2)


def save_sample_grid(path, label: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                     class_nc: int, max_images: int = 8) -> Path:
    """PNG with three rows: colourised label, real image, generated image."""
    from torchvision.utils import save_image

    n = min(max_images, label.shape[0])
    rows = [colorize_labels(label[:n], class_nc),
            (real[:n].float().cpu() + 1) / 2, (fake[:n].float().cpu() + 1) / 2]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat(rows).clamp(0, 1), path, nrow=n, padding=2)
    return path


# ----------------------------------------------------------------------------------------------
# The trainer

def match_state_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give every optimizer state tensor its parameter's memory layout.

    Fused Adam walks a parameter, its gradient and its state as flat memory: state saved in a
    channels_last run and loaded for a contiguous parameter (or the reverse) would silently
    pair the wrong elements (measured: updates off by ~lr per element).
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _split_pred(pred):
    """D outputs on cat(fake, real) -> (fake part, real part), per scale and feature."""
    fake = [[t[: t.shape[0] // 2] for t in scale] for scale in pred]
    real = [[t[t.shape[0] // 2:] for t in scale] for scale in pred]
    return fake, real


def discriminator_config_for(g_config: GeneratorConfig, **overrides) -> DiscriminatorConfig:
    """The official discriminator for a generator's label layout."""
    return DiscriminatorConfig(label_nc=g_config.label_nc,
                               contain_dontcare_label=g_config.contain_dontcare_label,
                               no_instance=g_config.no_instance, **overrides)


class Trainer:
    """Official SPADE/CLADE GAN training of one generator; see the module docstring.

    Building a Trainer seeds every RNG with ``recipe.seed`` (identical weights on all ranks),
    then reseeds with ``seed + rank`` for per-process noise.
    """

    def __init__(self, *, g_config: GeneratorConfig, d_config: DiscriminatorConfig | None = None,
                 recipe: TrainRecipe | None = None, device: str | torch.device = "cpu",
                 vgg_weights: str | Path | None = None):
        self.recipe = recipe = recipe or TrainRecipe()
        self.g_config = g_config
        self.d_config = d_config or discriminator_config_for(g_config)
        if (self.d_config.class_nc, self.d_config.no_instance) != (g_config.class_nc, g_config.no_instance):
            raise ValueError(f"discriminator label layout (class_nc={self.d_config.class_nc}, "
                             f"no_instance={self.d_config.no_instance}) differs from the generator's "
                             f"(class_nc={g_config.class_nc}, no_instance={g_config.no_instance})")
        self.device = torch.device(device)
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        self.use_amp = recipe.amp and native_bf16(self.device)
        self.memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format

        seed_everything(recipe.seed)
        self.G = build_generator_from_config(g_config, self.device)
        with torch.device(self.device):
            self.D = init_official(MultiscaleDiscriminator(self.d_config))
        self.E = build_encoder(g_config, self.device) if g_config.use_vae else None
        if self.distributed and self.device.type == "cuda":
            # SyncBatchNorm as the official 'syncbatch'; it has no CPU kernels, so CPU/gloo
            # runs keep per-process BatchNorm statistics.
            self.G = nn.SyncBatchNorm.convert_sync_batchnorm(self.G)
        elif self.distributed and self.rank == 0:
            log.info("SyncBatchNorm has no CPU kernels: each CPU process keeps its own BatchNorm "
                     "statistics (rank 0's are broadcast at every forward and saved)")
        for net in self.networks().values():
            net.to(memory_format=self.memory_format)
            set_input_scaling(net, recipe.spectral_input_scaling)
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if recipe.ema else None

        g_params = list(self.G.parameters()) + (list(self.E.parameters()) if self.E else [])
        # One fused kernel per step instead of a loop over ~100 tensors (CPU and CUDA).
        fused = self.device.type in ("cpu", "cuda")
        self.opt_G = torch.optim.Adam(g_params, lr=recipe.lr_G, betas=recipe.betas, fused=fused)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=recipe.lr_D, betas=recipe.betas, fused=fused)
        self.vgg_loss = None
        if recipe.use_vgg:
            self.vgg_loss = VGGLoss(VGG19Features.from_pretrained(vgg_weights)).to(self.device)
            self.vgg_loss.to(memory_format=self.memory_format)
        self._wrap()
        seed_everything(recipe.seed + self.rank)

        self.step = 0             # iterations done (each: maybe a G step, one D step)
        self.epoch = 0            # epochs finished
        self.epoch_batch = 0      # batches of the current epoch already used
        self.train_seconds = 0.0  # time in fit, over all resumed runs
        self.last_batch: dict = {}
        self.stopped_early = False  # set by fit when max_seconds ended it
        self._apply_lr()

    # -- setup ---------------------------------------------------------------------------------

    def networks(self) -> dict[str, nn.Module]:
        nets = {"G": self.G, "D": self.D}
        if self.E is not None:
            nets["E"] = self.E
        return nets

    def _wrap(self) -> None:
        """Callables used in the steps: DDP-wrapped and/or compiled views of G, E, D."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        def ddp(m):
            if not self.distributed:
                return m
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Default buffer sync: rank 0's BatchNorm statistics and spectral-norm u/v are
            # broadcast at every forward (u/v agree anyway: they depend on the weights only).
            return DDP(m, device_ids=ids)

        compile_ = torch.compile if self.recipe.compile else (lambda m: m)
        self._G_train = compile_(ddp(self.G))
        self._E_train = compile_(ddp(self.E)) if self.E is not None else None
        self._D_train = compile_(ddp(self.D))
        # In the G step D's gradients are discarded, so D runs without DDP (no gradient sync).
        self._D_plain = compile_(self.D)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=AMP_DTYPE, enabled=self.use_amp)

    @property
    def precision(self) -> str:
        """What the steps compute in, as tables record it: "bf16-autocast" or "fp32"."""
        return "bf16-autocast" if self.use_amp else "fp32"

    @property
    def lr_factor(self) -> float:
        return self.recipe.lr_factor(step=self.step, epoch=self.epoch)

    def _apply_lr(self) -> None:
        f = self.lr_factor
        for group in self.opt_G.param_groups:
            group["lr"] = self.recipe.lr_G * f
        for group in self.opt_D.param_groups:
            group["lr"] = self.recipe.lr_D * f

    # -- one iteration -------------------------------------------------------------------------

    def preprocess(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(semantic one-hot + edge, real image, ICPE map or None) on the device."""
        cfg = self.g_config
        label = batch["label"]
        try:  # on the loader's (CPU) tensor: no device synchronisation
            check_label_range(label, cfg.class_nc)
        except ValueError as exc:
            raise ValueError(f"batch with files {list(batch.get('path', []))}: {exc}") from None
        label = label.to(self.device, non_blocking=True)
        instance = batch.get("instance")
        instance = instance.to(self.device, non_blocking=True) if instance is not None else None
        semantic = make_semantic(label, instance, cfg).contiguous(memory_format=self.memory_format)
        image = batch["image"].to(self.device, non_blocking=True).float()
        dist_map = None
        if cfg.norm == "clade-icpe":
            if batch.get("dist") is None:
                raise ValueError("CLADE-ICPE training needs batch['dist'] (build the dataset with with_dist=True)")
            dist_map = batch["dist"].to(self.device, non_blocking=True).float()
        return semantic, image.contiguous(memory_format=self.memory_format), dist_map

    def _encode(self, encoder, image):
        mu, logvar = encoder(image)
        std = torch.exp(0.5 * logvar.float())
        z = torch.randn_like(std) * std + mu.float()
        return z, mu, logvar

    def _d_input(self, semantic, fake, real):
        # Fake and real in one batch (official): same instance-norm / batch statistics path.
        # Built in the compute dtype, which D's first conv casts to anyway (labels are exact in
        # bf16): half the bytes to concatenate and pool, no cast copy (~7% of an ade20k batch-1
        # iteration on CPU).
        dtype = AMP_DTYPE if self.use_amp else semantic.dtype
        semantic = semantic.to(dtype)
        fake_and_real = torch.cat([torch.cat([semantic, semantic], 0),
                                   torch.cat([fake.to(dtype), real.to(dtype)], 0)], 1)
        return fake_and_real.contiguous(memory_format=self.memory_format)

    def _check_finite(self, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        """Loss values as floats (averaged over processes); raise if any is NaN/inf."""
        vec = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
        if self.distributed:
            # Every rank must see a bad value, or the others would wait forever in backward.
            dist.all_reduce(vec)
            vec /= self.world_size
        values = dict(zip(losses, vec.tolist()))
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            raise NonFiniteLossError(
                f"non-finite loss at step {self.step + 1}: " + ", ".join(f"{k}={v}" for k, v in bad.items())
                + f" (all losses: {values}); the update was not applied and the last good checkpoint "
                  f"is kept. Lower the learning rate or check the input data.")
        return values

    def generator_step(self, semantic, image, dist_map) -> dict[str, float]:
        """Official ``run_generator_one_step``: GAN + GAN_Feat + VGG (+ KLD)."""
        r = self.recipe
        self.opt_G.zero_grad(set_to_none=True)
        self.D.requires_grad_(False)   # D's gradients would be thrown away; skip computing them
        try:
            with self._autocast():
                z = None
                losses = {}
                if self.E is not None:
                    z, mu, logvar = self._encode(self._E_train, image)
                    losses["KLD"] = kld_loss(mu, logvar) * r.lambda_kld
                fake = self._G_train(semantic, z=z, dist=dist_map)
                pred_fake, pred_real = _split_pred(self._D_plain(self._d_input(semantic, fake, image)))
                losses["GAN"] = gan_loss(pred_fake, True, for_discriminator=False, gan_mode=r.gan_mode)
                if r.use_feat_loss:
                    losses["GAN_Feat"] = feature_matching_loss(pred_fake, pred_real, r.lambda_feat)
                if self.vgg_loss is not None:
                    losses["VGG"] = self.vgg_loss(fake, image) * r.lambda_vgg
        finally:
            self.D.requires_grad_(True)
        # Not trained on: a diagnostic of how close the images get to the real ones.
        diagnostics = {"img_L1": (fake.detach().float() - image).abs().mean()}
        values = self._check_finite({**losses, **diagnostics})
        sum(losses.values()).backward()
        self.opt_G.step()
        self.last_batch["fake"] = fake.detach()
        if self.G_ema is not None:
            self._update_ema()
        return values

    def discriminator_step(self, semantic, image, dist_map) -> dict[str, float]:
        """Official ``run_discriminator_one_step``: hinge loss on a freshly generated fake."""
        r = self.recipe
        self.opt_D.zero_grad(set_to_none=True)
        with self._autocast():
            with torch.no_grad():
                z = self._encode(self.E, image)[0] if self.E is not None else None
                fake = self._G_train(semantic, z=z, dist=dist_map)
            pred_fake, pred_real = _split_pred(self._D_train(self._d_input(semantic, fake.detach(), image)))
            losses = {"D_Fake": gan_loss(pred_fake, False, gan_mode=r.gan_mode),
                      "D_real": gan_loss(pred_real, True, gan_mode=r.gan_mode)}
        values = self._check_finite(losses)
        sum(losses.values()).backward()
        self.opt_D.step()
        return values

    def train_step(self, batch: dict) -> dict[str, float]:
        """One official iteration on ``batch`` (dataset dict of label/instance/image/dist)."""
        semantic, image, dist_map = self.preprocess(batch)
        for net in self.networks().values():
            net.train()
        values = {}
        if self.step % self.recipe.D_steps_per_G == 0:
            values.update(self.generator_step(semantic, image, dist_map))
        values.update(self.discriminator_step(semantic, image, dist_map))
        self.last_batch.update(label=batch["label"], image=image)
        self.step += 1
        self._apply_lr()
        return values

    @torch.no_grad()
    def _update_ema(self) -> None:
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - self.recipe.ema_decay)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    @property
    def generator_for_eval(self) -> nn.Module:
        """The EMA generator when the recipe keeps one, else the trained G."""
        return self.G_ema if self.G_ema is not None else self.G

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to continue exactly (collective under DDP: call on every rank)."""
        rng = [rng_state(self.device)]
        if self.distributed:
            rng = [None] * self.world_size
            dist.all_gather_object(rng, rng_state(self.device))
        cpu = lambda m: {k: v.detach().cpu() for k, v in m.state_dict().items()} if m is not None else None
        return {
            "format": CHECKPOINT_FORMAT,
            "g_config": asdict(self.g_config), "d_config": asdict(self.d_config),
            "recipe": asdict(self.recipe),
            "G": cpu(self.G), "D": cpu(self.D), "E": cpu(self.E), "G_ema": cpu(self.G_ema),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "step": self.step, "epoch": self.epoch, "epoch_batch": self.epoch_batch,
            "lr_factor": self.lr_factor, "train_seconds": self.train_seconds,
            "world_size": self.world_size, "rng": rng,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``; the networks must have the same configs."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a trainer checkpoint (format {state.get('format')!r}, "
                             f"expected {CHECKPOINT_FORMAT!r})")
        for name, mine in (("g_config", asdict(self.g_config)), ("d_config", asdict(self.d_config))):
            diff = {k: (state[name].get(k), v) for k, v in mine.items() if state[name].get(k) != v}
            if diff:
                raise ValueError(f"checkpoint {name} differs from this trainer's: "
                                 + ", ".join(f"{k}: checkpoint {a!r} vs {b!r}" for k, (a, b) in diff.items()))
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        if self.E is not None:
            self.E.load_state_dict(state["E"])
        if self.G_ema is not None:
            if state.get("G_ema") is None:
                log.warning("checkpoint has no EMA generator; starting the EMA from G")
                self.G_ema.load_state_dict(state["G"])
            else:
                self.G_ema.load_state_dict(state["G_ema"])
        for optimizer, key in ((self.opt_G, "opt_G"), (self.opt_D, "opt_D")):
            optimizer.load_state_dict(state[key])
            match_state_layouts(optimizer)
        self.step, self.epoch, self.epoch_batch = state["step"], state["epoch"], state["epoch_batch"]
        self.train_seconds = state.get("train_seconds", 0.0)
        self._apply_lr()
        rngs = state["rng"]
        if len(rngs) != self.world_size:
            log.warning("checkpoint written by %d processes, resumed on %d: noise streams restart "
                        "(data order still continues)", len(rngs), self.world_size)
        set_rng_state(rngs[self.rank % len(rngs)], self.device)

    def save_checkpoint(self, path) -> Path | None:
        """Atomically write the trainer state (rank 0); the previous file stays as ``*.prev.pt``."""
        state = self.state_dict()
        path = Path(path)
        if self.rank == 0:
            with atomic_path(path) as tmp:
                torch.save(state, tmp)
                if path.exists():
                    _replace_with_link(path, previous_checkpoint(path))
        if self.distributed:
            dist.barrier()
        return path if self.rank == 0 else None

    def load_checkpoint(self, path) -> Path:
        """Resume from ``path`` (a file or a run folder); falls back to ``*.prev.pt`` if unreadable."""
        path = Path(path)
        if path.is_dir():
            path = path / CHECKPOINT_NAME
        candidates = [p for p in (path, previous_checkpoint(path)) if p.is_file()]
        if not candidates:
            raise FileNotFoundError(f"no checkpoint at {str(path)!r} (nor {previous_checkpoint(path).name})")
        for candidate in candidates:
            try:
                state = torch.load(candidate, map_location="cpu", weights_only=True)
            except Exception as exc:  # a truncated file raises several types
                log.warning("checkpoint %s unreadable (%s); trying the previous one", candidate, exc)
                continue
            self.load_state_dict(state)
            log.info("resumed from %s at step %d (epoch %d, batch %d)", candidate, self.step,
                     self.epoch, self.epoch_batch)
            return candidate
        raise ValueError(f"no readable checkpoint among {[str(c) for c in candidates]}")

    def export_generator(self, folder) -> Path | None:
        """Official-format ``latest_net_G.pth`` + ``generator.json`` (EMA weights when kept)."""
        if self.rank != 0:
            return None
        G = self.generator_for_eval
        export = copy.deepcopy(G).to(memory_format=torch.contiguous_format)
        return save_generator_dir(export, folder)

    @torch.no_grad()
    def sync_buffers(self) -> None:
        """Copy rank 0's buffers (BatchNorm statistics) to every rank; CPU runs keep local BN."""
        if self.distributed:
            for net in list(self.networks().values()) + ([self.G_ema] if self.G_ema is not None else []):
                for b in net.buffers():
                    dist.broadcast(b, 0)

    # -- the loop ------------------------------------------------------------------------------

    def fit(self, data, *, steps: int | None = None, epochs: int | None = None,
            out_dir: str | Path | None = None, num_workers: int = 0, log_every: int = 10,
            save_every: int = 500, sample_every: int = 500, validate: bool = True,
            progress: bool = True, max_seconds: float | None = None) -> list[dict]:
        """Train until ``steps`` iterations (or ``epochs`` epochs) in total, resumed ones included.

        ``max_seconds``: a wall-clock cap for this call; training stops (checkpointed) at the
        first step past it and ``stopped_early`` is set.
        ``data``: a Dataset (shuffled by (seed, epoch), resumable mid-epoch) or a DataLoader.
        With ``out_dir``: ``log.jsonl`` / ``log.csv`` (mean losses per ``log_every``),
        ``samples/step_XXXXXXX.png`` and ``checkpoint.pt`` every ``sample_every`` /
        ``save_every`` steps and at the end (an interval of 0: only at the end). Returns the
        logged rows.
        """
        from tqdm.auto import tqdm

        main = self.rank == 0
        out_dir = Path(out_dir) if out_dir is not None else None
        if isinstance(data, DataLoader):
            loader, dataset = data, data.dataset
        else:
            dataset = data
            loader = make_loader(dataset, batch_size=self.recipe.batch_size, seed=self.recipe.seed,
                                 rank=self.rank, world_size=self.world_size, num_workers=num_workers,
                                 pin_memory=self.device.type == "cuda")
        if validate:
            self._validate(dataset)
        batches_per_epoch = self._batches_per_epoch(loader)
        if (steps is None) == (epochs is None):
            raise ValueError("give exactly one of steps= or epochs=")
        total = steps if steps is not None else epochs * batches_per_epoch
        per_step = loader.batch_size * self.world_size
        if main:
            log.info("effective batch size %d (%d per process x %d processes); %d batches per epoch; "
                     "training steps %d -> %d", per_step, loader.batch_size, self.world_size,
                     batches_per_epoch, self.step, total)
        history = self._read_history(out_dir) if out_dir is not None and main else []
        self.stopped_early = False
        fit_start = time.perf_counter()
        window: dict[str, list[float]] = {}
        window_start, window_steps = time.perf_counter(), 0
        bar = tqdm(total=total, initial=self.step, disable=not (main and progress), dynamic_ncols=True,
                   desc=f"train {self.g_config.norm}", unit="step")
        try:
            while self.step < total and not self.stopped_early:
                for batch in self._epoch_batches(loader):
                    t0 = time.perf_counter()
                    values = self.train_step(batch)
                    self._advance_position(batches_per_epoch)
                    self.train_seconds += time.perf_counter() - t0
                    for k, v in values.items():
                        window.setdefault(k, []).append(v)
                    window_steps += 1
                    bar.update(1)
                    done = self.step >= total
                    if not done and max_seconds is not None and self._time_is_up(fit_start, max_seconds):
                        self.stopped_early = done = True
                        if main:
                            log.warning("time cap of %.0f s reached: stopping at step %d of %d",
                                        max_seconds, self.step, total)
                    if _due(self.step, log_every) or done:
                        row = self._log_row(window, window_steps * per_step / (time.perf_counter() - window_start))
                        history.append(row)
                        bar.set_postfix({k: f"{row[k]:.3g}" for k in (*window, "images_per_s")})
                        if out_dir is not None and main:
                            _append_jsonl(out_dir / "log.jsonl", row)
                        window, window_start, window_steps = {}, time.perf_counter(), 0
                    if out_dir is not None:
                        self._save_outputs(out_dir, history, samples=_due(self.step, sample_every) or done,
                                           checkpoint=_due(self.step, save_every) or done)
                    if done:
                        break
        finally:
            bar.close()
        self.sync_buffers()
        return history

    def _advance_position(self, batches_per_epoch: int) -> None:
        """Count the batch just used; roll over to the next epoch (epoch-based lr decay)."""
        self.epoch_batch += 1
        if self.epoch_batch >= batches_per_epoch:
            self.epoch, self.epoch_batch = self.epoch + 1, 0
            self._apply_lr()

    def _time_is_up(self, fit_start: float, max_seconds: float) -> bool:
        over = time.perf_counter() - fit_start > max_seconds
        if self.distributed:  # every rank must stop at the same step
            flag = torch.tensor([float(over)], device=self.device)
            dist.all_reduce(flag)
            over = bool(flag.item())
        return over

    def _log_row(self, window: dict[str, list[float]], images_per_s: float) -> dict:
        """One logged row: position, time, throughput, lr and the window's mean losses."""
        return {"step": self.step, "epoch": self.epoch, "seconds": round(self.train_seconds, 3),
                "images_per_s": round(images_per_s, 3),
                "lr_G": self.opt_G.param_groups[0]["lr"], "lr_D": self.opt_D.param_groups[0]["lr"],
                **{k: float(np.mean(v)) for k, v in window.items()}}

    def _save_outputs(self, out_dir: Path, history: list[dict], *, samples: bool, checkpoint: bool) -> None:
        """Sample grid (rank 0) and checkpoint + log.csv (collective) when due."""
        if samples and self.rank == 0:
            self.save_samples(out_dir / "samples" / f"step_{self.step:07d}.png")
        if checkpoint:
            self.save_checkpoint(out_dir / CHECKPOINT_NAME)
            if self.rank == 0:
                _write_csv(history, out_dir / "log.csv")

    def _validate(self, dataset) -> None:
        """check_dataset_labels on every rank; all ranks stop if any rejects the data."""
        error = None
        try:
            check_dataset_labels(dataset, self.g_config)
        except (ValueError, FileNotFoundError) as exc:
            error = exc
        if self.distributed:
            flag = torch.tensor([float(error is not None)], device=self.device)
            dist.all_reduce(flag)
            if flag.item() and error is None:
                raise RuntimeError("another process rejected the training data (see its error)")
        if error is not None:
            raise error

    def _batches_per_epoch(self, loader) -> int:
        sampler = loader.sampler
        if isinstance(sampler, ResumableSampler):
            return sampler.num_samples // loader.batch_size
        return len(loader)

    def _epoch_batches(self, loader):
        """Batches of the current epoch from position ``epoch_batch`` on."""
        sampler = loader.sampler
        dataset = loader.dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.epoch)
        if isinstance(sampler, ResumableSampler):
            sampler.set_position(self.epoch, self.epoch_batch * loader.batch_size)
            return iter(loader)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        # A foreign loader cannot start part-way: skip the batches already used.
        return itertools.islice(iter(loader), self.epoch_batch, None)

    def save_samples(self, path) -> Path | None:
        """Grid of the last batch: colourised labels, real images, generated images."""
        if "fake" not in self.last_batch:
            return None
        b = self.last_batch
        return save_sample_grid(path, b["label"], b["image"], b["fake"], self.g_config.class_nc)

    def _read_history(self, out_dir: Path) -> list[dict]:
        """Rows logged up to the current step (a killed run's later rows are dropped)."""
        path = out_dir / "log.jsonl"
        if not path.is_file():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if r["step"] <= self.step]
        if len(kept) != len(rows):
            write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
        return kept


def _due(step: int, every: int) -> bool:
    """Whether a periodic action runs at ``step``; ``every`` 0 means never (only at the end)."""
    return every > 0 and step % every == 0


def previous_checkpoint(path: Path) -> Path:
    """``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _replace_with_link(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` atomically (a hard link when the filesystem allows)."""
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)


def _append_jsonl(path: Path, row: dict) -> None:
    append_line(path, json.dumps(row))


def _write_csv(rows: list[dict], path: Path) -> None:
    import pandas as pd

    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def recipe_from_dict(d: dict) -> TrainRecipe:
    """TrainRecipe from a (possibly older) dict, ignoring unknown keys."""
    valid = {f.name for f in fields(TrainRecipe)}
    return TrainRecipe(**{k: v for k, v in d.items() if k in valid})
