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

This module is one iteration and the state it changes; the pieces around it each have their
own module: the options (``training.recipe``), the losses (``training.losses``), the loop
(``training.loop``), the checkpoint file (``training.checkpoint_store``), torchrun and data
order (``training.distributed``), the log files (``training.run_log``) and sample images
(``training.sample_grid``).
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import default_collate

from data.labels import check_label_range, make_semantic

from models import build_encoder, build_generator_from_config
from training import losses
from training import loop
from models.checkpoint import save_generator_dir
from training.checkpoint_store import (CHECKPOINT_FORMAT, check_trainer_state, match_state_layouts, read_checkpoint,
                               rng_state, save_checkpoint_file, seed_everything, set_rng_state)
from models.discriminator import MultiscaleDiscriminator
from training.distributed import is_distributed
from models.fast import native_bf16
from models.generator import check_icpe_data
from models.init import init_official
from training.losses import NonFiniteLossError, VGGLoss
from models.presets import DiscriminatorConfig, GeneratorConfig
from models.registry import norm_spec
from training.batch_norm_stats import estimate_batch_norm
from training.sample_grid import save_sample_grid
from models.spectral import set_input_scaling
from training.recipe import TrainRecipe, discriminator_config_for
from training.vgg import VGG19Features

log = logging.getLogger(__name__)

AMP_DTYPE = torch.bfloat16  # autocast compute dtype of TrainRecipe.amp


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
        self.distributed = is_distributed()
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
            if recipe.bn_estimation_batches:
                raise ValueError("bn_estimation_batches needs plain BatchNorm; under torchrun on CUDA the generator "
                                 "has SyncBatchNorm: train with bn_estimation_batches=0")
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
        self.checkpoint_path: Path | None = None  # the checkpoint last written or read, and its step
        self.checkpoint_step: int | None = None
        self._g_step_applied = False  # within train_step: whether this step's G update happened
        self._estimation_inputs: list[tuple] = []  # (semantic, dist) of recipe.bn_estimation_batches batches
        self._estimation_source = None             # the dataset they were taken from
        self._estimated: tuple[int, nn.Module] | None = None  # (step, generator_for_eval) computed at that step
        self._apply_lr()

    # -- setup ---------------------------------------------------------------------------------

    def networks(self) -> dict[str, nn.Module]:
        """The trained networks by name: G, D and, with a VAE, E."""
        nets = {"G": self.G, "D": self.D}
        if self.E is not None:
            nets["E"] = self.E
        return nets

    def _wrap(self) -> None:
        """Callables used in the steps: DDP-wrapped and/or compiled views of G, E, D."""
        def ddp(m):
            if not self.distributed:
                return m
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Gradients live in DDP's buckets (no copy per step) with their parameters' strides:
            # given a gradient now, DDP replaces it by its bucket view, backward accumulates into
            # it, and zero_grad keeps it. Otherwise a conv whose backward returns another layout
            # than its parameter's (a 1x1 kernel in channels_last) is copied with a warning
            # ("Grad strides do not match bucket view strides").
            for p in m.parameters():
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)
            # Default buffer sync: rank 0's BatchNorm statistics and spectral-norm u/v are
            # broadcast at every forward (u/v agree anyway: they depend on the weights only).
            return DistributedDataParallel(m, device_ids=ids, gradient_as_bucket_view=True)

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
        if norm_spec(cfg.norm).needs_icpe:
            if batch.get("dist") is None:
                raise ValueError(f"{cfg.norm} training needs batch['dist'] (build the dataset with with_dist=True)")
            dist_map = batch["dist"].to(self.device, non_blocking=True).float()
        return semantic, image.contiguous(memory_format=self.memory_format), dist_map

    def _input_layout(self) -> dict:
        """dtype and memory format of the discriminator input (see losses.discriminator_input)."""
        return {"dtype": AMP_DTYPE if self.use_amp else None, "memory_format": self.memory_format}

    def _check_finite(self, values: dict[str, torch.Tensor], network: str) -> dict[str, float]:
        """Loss values as floats (averaged over processes); raise if any is NaN/inf.

        ``network``: "G" or "D", whose step these losses are for (it says what was applied).
        """
        vec = torch.stack([v.detach().float().reshape(()) for v in values.values()])
        if self.distributed:
            # Every rank must see a bad value, or the others would wait forever in backward.
            dist.all_reduce(vec)
            vec /= self.world_size
        floats = dict(zip(values, vec.tolist()))
        bad = {k: v for k, v in floats.items() if not math.isfinite(v)}
        if bad:
            if network == "D" and self._g_step_applied:
                applied = "this step's generator update was applied, its discriminator update was not"
            else:
                applied = "no update of this step was applied"
            raise NonFiniteLossError(
                f"non-finite {'generator' if network == 'G' else 'discriminator'} loss at step {self.step + 1}: "
                + ", ".join(f"{k}={v}" for k, v in bad.items()) + f" (all: {floats}); {applied}. "
                f"Lower the learning rate or check the input data.")
        return floats

    def generator_step(self, semantic, image, dist_map) -> dict[str, float]:
        """Official ``run_generator_one_step``: :func:`training.losses.generator_losses`, one Adam step."""
        self.opt_G.zero_grad(set_to_none=not self.distributed)  # DDP: keep the bucket views (_wrap)
        with self._autocast():
            step = losses.generator_losses(self._G_train, self._D_plain, semantic, image, recipe=self.recipe,
                                           dist=dist_map, encoder=self._E_train, vgg_loss=self.vgg_loss,
                                           **self._input_layout())
        # Not trained on: a diagnostic of how close the images get to the real ones.
        diagnostics = {"img_L1": (step.fake.detach().float() - image).abs().mean()}
        values = self._check_finite({**step.terms, **diagnostics}, "G")
        step.total.backward()
        self.opt_G.step()
        self._g_step_applied = True
        self.last_batch["fake"] = step.fake.detach()
        if self.G_ema is not None:
            self._update_ema()
        return values

    def discriminator_step(self, semantic, image, dist_map) -> dict[str, float]:
        """Official ``run_discriminator_one_step``: :func:`training.losses.discriminator_losses`, one Adam step."""
        self.opt_D.zero_grad(set_to_none=not self.distributed)
        with self._autocast():
            step = losses.discriminator_losses(self._G_train, self._D_train, semantic, image, recipe=self.recipe,
                                               dist=dist_map, encoder=self.E, **self._input_layout())
        values = self._check_finite(step.terms, "D")
        step.total.backward()
        self.opt_D.step()
        return values

    def train_step(self, batch: dict) -> dict[str, float]:
        """One official iteration on ``batch`` (dataset dict of label/instance/image/dist)."""
        semantic, image, dist_map = self.preprocess(batch)
        for net in self.networks().values():
            net.train()
        values = {}
        self._g_step_applied = False
        if self.step % self.recipe.D_steps_per_G == 0:
            values.update(self.generator_step(semantic, image, dist_map))
        values.update(self.discriminator_step(semantic, image, dist_map))
        self.last_batch.update(label=batch["label"], image=image)
        self.step += 1
        self._apply_lr()
        return values

    def timed_step(self, batch: dict, batches_per_epoch: int) -> dict[str, float]:
        """:meth:`train_step`, then :meth:`advance_position`; their time is added to ``train_seconds``."""
        start = time.perf_counter()
        values = self.train_step(batch)
        self.advance_position(batches_per_epoch)
        self.train_seconds += time.perf_counter() - start
        return values

    def advance_position(self, batches_per_epoch: int) -> None:
        """Count the batch just used; roll over to the next epoch (epoch-based lr decay)."""
        self.epoch_batch += 1
        if self.epoch_batch >= batches_per_epoch:
            self.epoch, self.epoch_batch = self.epoch + 1, 0
            self._apply_lr()

    @torch.no_grad()
    def _update_ema(self) -> None:
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - self.recipe.ema_decay)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    def keep_estimation_batches(self, dataset) -> None:
        """Keep the first ``recipe.bn_estimation_batches`` batches of ``dataset`` in index order (not
        shuffled: the same ones at every step and after a resume), preprocessed, for
        :attr:`generator_for_eval`; nothing to do when they came from ``dataset`` already."""
        if dataset is self._estimation_source:
            return
        size = self.recipe.batch_size
        count = min(len(dataset), self.recipe.bn_estimation_batches * size)
        batches = (default_collate([dataset[i] for i in range(start, min(start + size, count))])
                   for start in range(0, count, size))
        self._estimation_inputs = [(semantic, dist) for semantic, _, dist in map(self.preprocess, batches)]
        self._estimation_source, self._estimated = dataset, None

    @property
    def generator_for_eval(self) -> nn.Module:
        """The generator to evaluate and export: the EMA generator when the recipe keeps one, else the
        trained G; with ``recipe.bn_estimation_batches`` and batches kept (``fit`` keeps them), a copy
        whose BatchNorm statistics are re-estimated on them for the current weights
        (:func:`training.batch_norm_stats.estimate_batch_norm`), computed once per step."""
        trained = self.G_ema if self.G_ema is not None else self.G
        if not (self.recipe.bn_estimation_batches and self._estimation_inputs):
            return trained
        if self._estimated is None or self._estimated[0] != self.step:
            self._estimated = (self.step, estimate_batch_norm(trained, self._estimation_inputs))
        return self._estimated[1]

    def fit(self, data, **options) -> list[dict]:
        """Train on ``data``: :func:`training.loop.fit` (steps=, epochs=, out_dir=, ...) with this trainer.

        ``data`` whose ICPE maps are of another mode than ``g_config.icpe_mode`` (the mode the
        exported generator.json records) is refused."""
        check_icpe_data(self.g_config, data, "the training data")
        return loop.fit(self, data, **options)

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

    def load_state_dict(self, state: dict, *, source: str = "the given state") -> None:
        """Restore a ``state_dict()``; networks and recipe must be this trainer's.

        Raises :class:`training.checkpoint_store.SettingsMismatchError` naming every setting
        that differs (``source`` names the checkpoint in the message).
        """
        check_trainer_state(state, g_config=self.g_config, d_config=self.d_config, recipe=self.recipe, source=source)
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
        if self.rank == 0:
            save_checkpoint_file(state, path)
        if self.distributed:
            dist.barrier()
        self.checkpoint_path, self.checkpoint_step = Path(path), self.step
        return Path(path) if self.rank == 0 else None

    def load_checkpoint(self, path) -> Path:
        """Resume from ``path``: exactly that file, or a run folder's latest readable checkpoint."""
        state, read = read_checkpoint(path)
        self.load_state_dict(state, source=f"checkpoint {str(read)!r}")
        self.checkpoint_path, self.checkpoint_step = read, self.step
        log.info("resumed from %s at step %d (epoch %d, batch %d)", read, self.step, self.epoch, self.epoch_batch)
        return read

    def estimated_checkpoint_bytes(self) -> int:
        """Size of one checkpoint file: the networks' tensors (G, D, E, EMA) and Adam's two
        moments per trained parameter (counted before the first step creates them)."""
        nets = [*self.networks().values()] + ([self.G_ema] if self.G_ema is not None else [])
        tensors = sum(t.numel() * t.element_size() for net in nets for t in net.state_dict().values())
        moments = sum(2 * p.numel() * 4 for opt in (self.opt_G, self.opt_D)
                      for group in opt.param_groups for p in group["params"])
        return tensors + moments

    def export_generator(self, folder) -> Path | None:
        """Official-format ``latest_net_G.pth`` + ``generator.json`` (EMA weights when kept)."""
        if self.rank != 0:
            return None
        export = copy.deepcopy(self.generator_for_eval).to(memory_format=torch.contiguous_format)
        return save_generator_dir(export, folder)

    def save_samples(self, path) -> Path | None:
        """Grid of the last batch: colourised labels, real images, generated images."""
        if "fake" not in self.last_batch:
            return None
        b = self.last_batch
        return save_sample_grid(path, b["label"], b["image"], b["fake"], self.g_config.class_nc)

    @torch.no_grad()
    def sync_buffers(self) -> None:
        """Copy rank 0's buffers (BatchNorm statistics) to every rank; CPU runs keep local BN."""
        if self.distributed:
            for net in list(self.networks().values()) + ([self.G_ema] if self.G_ema is not None else []):
                for b in net.buffers():
                    dist.broadcast(b, 0)
