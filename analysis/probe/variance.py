"""Modulation probe: how much of a generator's per-pixel gamma / beta is semantic, positional, residual.

    stats = capture_modulation_statistics(G, batches)         # streaming float64 statistics
    channels = variance_decomposition(stats)                  # one row per layer, param, channel
    layers = layer_summary(channels)                          # aggregates per layer

The ablations (class means for SPADE, no position for CLADE-ICPE) are in ``analysis.probe.ablation``.

``batches`` yields dicts like the datasets': ``label`` [N, 1, H, W] class ids, ``instance``
(unless the generator has ``no_instance``) and optionally ``dist`` [N, 2, H, W], the ICPE map
(computed from the label with ``data.icpe`` when absent, in :func:`position_mode`: the mode a
CLADE-ICPE generator was trained with, ``config.icpe_mode``). Batches or a DataLoader whose
dataset says it holds maps of another mode (``icpe_mode``) are refused for CLADE-ICPE.

What is measured. For one modulation layer, ``y`` is the per-pixel *scale* ("gamma": SPADE's
``1 + gamma``, CLADE's ``gamma[class]``) or *shift* ("beta") of one channel, over every pixel of
every probed image at the layer's resolution. Variances are pixel-weighted population variances:

    total      = between + within
    between    = sum_k n_k (mean_k - mean)^2 / n          the semantic part (class k, n_k pixels)
    within     = positional + residual
    positional = sum_k explained_k / n                    regression on the ICPE coordinates,
                                                          fitted separately for every class

``semantic_ratio = between / total`` etc., so the three ratios sum to 1. Position is the ICPE
map (row and column offset from the centroid of the pixel's connected class component, in
(-1, 1)) that the layer sees: the map given to the generator, nearest-resized to the layer.
A channel with ``total == 0`` (e.g. CLADE's initial ``beta = 0``) has undefined ratios: they are
NaN and left out of every mean, and counted in ``zero_variance_channels``.

Beside the modulation, the capture records each channel's mean square of the parameter-free
normalised activation the layer scales (``activation_mean_square``; 1 under training-mode
normalisation, whatever the running statistics make it in eval mode): the scale against which a
modulation is negligible or not (``analysis.probe.verdicts``). ``classes_seen`` counts the
classes present at the layer's resolution: with one, no share between classes exists.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from data.icpe import icpe_map_batch
from data.labels import make_semantic
from models.generator import check_icpe_data
from models.norms import ModulatedNorm
from models.presets import TOOLKIT_ICPE_MODE

from analysis.choices import BASES

log = logging.getLogger(__name__)

PARAMS = ("gamma", "beta")
# Regression bases on the ICPE coordinates (dy, dx): 'linear' is what ICPE's 1x1 convs can
# express; 'quadratic' also captures centre-versus-border effects (dy^2, dx^2).


def basis_features(positions: torch.Tensor, basis: str = "quadratic") -> torch.Tensor:
    """[P, B] float64 regression features of ICPE coordinates ``positions`` [N, 2, H, W].

    The first feature is the constant 1, so ``X^T X[0, 0]`` is the pixel count and
    ``X^T y[0]`` the sum of ``y``.
    """
    if basis not in BASES:
        raise ValueError(f"unknown basis {basis!r}; expected one of {list(BASES)}")
    dy, dx = positions.detach().to(torch.float64).permute(1, 0, 2, 3).reshape(2, -1)
    columns = [torch.ones_like(dy), dy, dx]
    if basis == "quadratic":
        columns += [dy * dy, dx * dx, dy * dx]
    return torch.stack(columns, dim=1)


class LayerStatistics:
    """Streaming float64 sufficient statistics of one layer's per-pixel scale and shift.

    Per class ``k`` (over the pixels of that class): ``xtx[k] = X^T X`` of the position basis,
    ``xty[k] = X^T y`` and ``yty[k] = sum y^2`` for every channel of gamma and beta stacked
    (``2 * channels`` columns). Memory is O(classes x channels), whatever the data size.
    ``y`` is stored minus ``offset`` (the channel means of the first batch) so that sums of
    squares do not cancel catastrophically: SPADE's scale is ``1 + gamma`` with small gamma.
    """

    def __init__(self, name: str, resolution: tuple[int, int], channels: int, class_nc: int,
                 basis: str = "quadratic"):
        self.name, self.resolution, self.channels = name, tuple(resolution), channels
        self.class_nc, self.basis = class_nc, basis
        b = len(BASES[basis])
        self.xtx = torch.zeros(class_nc, b, b, dtype=torch.float64)
        self.xty = torch.zeros(class_nc, b, 2 * channels, dtype=torch.float64)
        self.yty = torch.zeros(class_nc, 2 * channels, dtype=torch.float64)
        self.offset: torch.Tensor | None = None
        # per channel: sum of squares of the normalised activation, and its element count
        self.activation_squares = torch.zeros(channels, dtype=torch.float64)
        self.activation_count = 0

    def update_activation(self, normalised: torch.Tensor) -> None:
        """Add one batch of the layer's parameter-free normalised activation [N, C, H, W]."""
        x = normalised.detach().to("cpu", torch.float64).transpose(0, 1).reshape(self.channels, -1)
        self.activation_squares += (x * x).sum(1)
        self.activation_count += x.shape[1]

    def activation_mean_square(self) -> np.ndarray:
        """[C] mean square of the normalised activation per channel (NaN when never recorded)."""
        if self.activation_count == 0:
            return np.full(self.channels, np.nan)
        return (self.activation_squares / self.activation_count).numpy()

    def update(self, label: torch.Tensor, positions: torch.Tensor, scale: torch.Tensor,
               shift: torch.Tensor) -> None:
        """Add one batch: ``label`` [N, H, W] ids, ``positions`` [N, 2, H, W], scale/shift [N, C, H, W]."""
        if scale.shape[1] != self.channels or tuple(scale.shape[-2:]) != self.resolution:
            raise ValueError(f"layer {self.name}: got scale {tuple(scale.shape)}; expected "
                             f"[N, {self.channels}, {self.resolution[0]}, {self.resolution[1]}]")
        y = torch.cat((scale, shift), 1).detach().to("cpu", torch.float64)
        y = y.permute(0, 2, 3, 1).reshape(-1, 2 * self.channels)
        if self.offset is None:
            self.offset = y.mean(0)
        y = y - self.offset
        x = basis_features(positions.cpu(), self.basis)
        lab = label.reshape(-1).cpu()
        b = x.shape[1]
        self.xtx.index_add_(0, lab, (x[:, :, None] * x[:, None, :]))
        for j in range(b):
            self.xty[:, j].index_add_(0, lab, y * x[:, j:j + 1])
        self.yty.index_add_(0, lab, y * y)

    @property
    def count(self) -> torch.Tensor:
        """Pixels per class [K] (float64)."""
        return self.xtx[:, 0, 0]

    def columns(self, param: str) -> slice:
        """Columns of ``param`` in ``xty`` / ``yty`` / ``offset``."""
        if param not in PARAMS:
            raise ValueError(f"unknown param {param!r}; expected one of {PARAMS}")
        c = self.channels
        return slice(0, c) if param == "gamma" else slice(c, 2 * c)

    def class_means(self, param: str) -> torch.Tensor:
        """[K, C] float64 per-class mean of ``param`` (NaN for classes never seen)."""
        cols = self.columns(param)
        n = self.count[:, None]
        return self.xty[:, 0, cols] / n + self.offset[cols]

    def overall_mean(self, param: str) -> torch.Tensor:
        """[C] float64 mean of ``param`` over all pixels."""
        cols = self.columns(param)
        return self.xty[:, 0, cols].sum(0) / self.count.sum() + self.offset[cols]

    def decompose(self, param: str, exclude_classes: Iterable[int] = ()) -> pd.DataFrame:
        """Per-channel variance decomposition of ``param`` (see the module docstring)."""
        cols = self.columns(param)
        keep = self.count.numpy() > 0
        keep[list(exclude_classes)] = False
        n_k = self.count.numpy()[keep][:, None]
        xtx = self.xtx.numpy()[keep]
        xty = self.xty.numpy()[keep][:, :, cols]
        sums = xty[:, 0]
        n = n_k.sum()
        mean_k = sums / n_k
        mean = sums.sum(0) / n
        between = (n_k * (mean_k - mean) ** 2).sum(0) / n
        within_k = np.maximum(self.yty.numpy()[keep][:, cols] - sums ** 2 / n_k, 0.0)
        # Least squares per class: fitted sum of squares = Xy^T (X^T X)^+ Xy; minus the
        # intercept-only part sums^2 / n_k it is the within-class variance the basis explains.
        # rtol drops directions the positions do not span (e.g. a class seen at one spot).
        pinv = np.linalg.pinv(xtx, rtol=1e-10, hermitian=True)
        fitted = np.einsum("kbc,kbd,kdc->kc", xty, pinv, xty)
        explained_k = np.clip(fitted - sums ** 2 / n_k, 0.0, within_k)
        # An in-sample fit explains (p - 1) / (n_k - 1) of pure noise on average; with few
        # pixels per class (head layers, few images) that matters, so an adjusted estimate
        # (as adjusted R^2) is reported beside: explained - (p - 1) / (n_k - p) * residual.
        rank = np.linalg.matrix_rank(xtx, rtol=1e-10, hermitian=True)[:, None]
        dof = n_k - rank
        chance = (rank - 1) / np.maximum(dof, 1)
        adjusted_k = np.where(dof > 0, np.maximum(explained_k - chance * (within_k - explained_k), 0.0), 0.0)
        within = within_k.sum(0) / n
        positional = explained_k.sum(0) / n
        positional_adjusted = adjusted_k.sum(0) / n
        total = between + within
        defined = total > 0

        def ratio(part):
            return np.where(defined, part / np.where(defined, total, 1.0), np.nan)
        return pd.DataFrame({
            "layer": self.name, "resolution": f"{self.resolution[0]}x{self.resolution[1]}",
            "param": param, "channel": np.arange(self.channels),
            "mean": mean + self.offset[cols].numpy(),
            "total_variance": total, "between_variance": between,
            "positional_variance": positional, "residual_variance": within - positional,
            "semantic_ratio": ratio(between), "positional_ratio": ratio(positional),
            "residual_ratio": ratio(within - positional),
            "positional_variance_adjusted": positional_adjusted,
            "positional_ratio_adjusted": ratio(positional_adjusted),
            "activation_mean_square": self.activation_mean_square(), "classes_seen": int(keep.sum()),
        })


@dataclass
class ProbeStatistics:
    """Statistics of every modulation layer of one generator, in forward (depth) order."""

    layers: dict[str, LayerStatistics]
    class_nc: int
    dontcare: int | None          # class id of 'unknown', None if the preset has none
    basis: str
    images: int = 0


def modulation_layers(generator: nn.Module) -> dict[str, ModulatedNorm]:
    """Every SPADE / CLADE / CLADE-ICPE layer of ``generator`` by module name."""
    return {name: m for name, m in generator.named_modules() if isinstance(m, ModulatedNorm)}


@contextmanager
def override_modulation(modules: dict[str, ModulatedNorm], make_override) -> Iterator[None]:
    """Install ``make_override(name, module, inner)`` as each module's modulation_override.

    ``inner`` is what the layer would have used (an override already set, or ``modulation``),
    so overrides compose; the previous state is restored on exit.
    """
    saved = {name: m.__dict__.get("modulation_override") for name, m in modules.items()}
    try:
        for name, m in modules.items():
            m.modulation_override = make_override(name, m, m.modulation_override or m.modulation)
        yield
    finally:
        for name, m in modules.items():
            if saved[name] is None:
                m.__dict__.pop("modulation_override", None)
            else:
                m.modulation_override = saved[name]


@contextmanager
def eval_no_grad(generator: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm running statistics) and no_grad; the training flag is restored."""
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        generator.train(was_training)


def position_mode(config) -> str:
    """The ICPE mode of the positions for ``config``'s generator: the mode a CLADE-ICPE generator
    was trained with (``config.icpe_mode``), else the toolkit's (for the probe's regression only)."""
    return config.icpe_mode or TOOLKIT_ICPE_MODE


def label_icpe(label: torch.Tensor, config) -> torch.Tensor:
    """ICPE maps [N, 2, H, W] of class-id maps ``label`` [N, H, W] in :func:`position_mode`
    (corrected leaves out the dontcare class; official skips class 0, as the official code)."""
    mode = position_mode(config)
    dontcare = config.label_nc if config.contain_dontcare_label and mode == "corrected" else None
    return icpe_map_batch(label, mode=mode, dontcare=dontcare)


def prepare_inputs(batch: dict, config, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(semantic map, ICPE map) for a dataset batch; the ICPE map is computed when absent
    (:func:`label_icpe`). A batch whose ``icpe_mode`` entry differs from a CLADE-ICPE
    generator's mode is refused."""
    check_icpe_data(config, batch, "the batch")
    label = batch["label"]
    label = label[:, None] if label.dim() == 3 else label
    semantic = make_semantic(label, batch.get("instance"), config)
    dist = batch.get("dist")
    if dist is None:
        dist = label_icpe(label[:, 0], config)
    return semantic.to(device), dist.to(device=device, dtype=semantic.dtype)


def generate_fixed_z(generator: nn.Module, semantic: torch.Tensor, dist: torch.Tensor, seed: int = 0):
    """``generator(semantic, dist=dist)`` with a z drawn from ``seed`` when it has a VAE, so that
    ablated and unablated outputs compare."""
    z = None
    if generator.config.use_vae:
        z = torch.randn(semantic.shape[0], generator.config.z_dim,
                        generator=torch.Generator().manual_seed(seed)).to(semantic)
    return generator(semantic, z=z, dist=dist)


def model_device(generator: nn.Module) -> torch.device:
    """The device of the generator's weights."""
    return next(generator.parameters()).device


def capture_modulation_statistics(generator: nn.Module, batches: Iterable[dict], *,
                                  basis: str = "quadratic", progress: bool = True) -> ProbeStatistics:
    """Run ``generator`` (eval mode) over ``batches`` and accumulate every layer's statistics.

    The capture wraps each layer's modulation (a ``modulation_override`` that returns the
    layer's own values), so gamma and beta are computed once per layer and batch.
    """
    config = generator.config
    check_icpe_data(config, batches, "the probe's batches")
    modules = modulation_layers(generator)
    stats = ProbeStatistics({}, config.class_nc,
                            config.label_nc if config.contain_dontcare_label else None, basis)
    positions_at: dict = {}

    def make_override(name, module, inner):
        def capture(cond, size):
            scale, shift = inner(cond, size)
            size = tuple(size)
            full_scale, full_shift = per_pixel(name, module, scale, shift, cond.semantic.shape[0], size)
            if size not in positions_at:
                positions_at[size] = F.interpolate(positions_at["full"], size=size, mode="nearest")
            if name not in stats.layers:
                stats.layers[name] = LayerStatistics(name, size, full_scale.shape[1], config.class_nc, basis)
            stats.layers[name].update(cond.label_at(size), positions_at[size], full_scale, full_shift)
            return scale, shift
        return capture

    def record_activation(name):
        def hook(module, inputs, output):
            # modulation(), called first, created the entry; a layer that never calls it is refused below
            if name in stats.layers:
                stats.layers[name].update_activation(output)
        return hook

    # A layer without a param_free_norm (a plugin's own forward) records no activation scale.
    hooks = [m.param_free_norm.register_forward_hook(record_activation(name)) for name, m in modules.items()
             if isinstance(getattr(m, "param_free_norm", None), nn.Module)]
    device = model_device(generator)
    try:
        with eval_no_grad(generator), override_modulation(modules, make_override):
            for batch in tqdm(batches, desc="probe: capture", unit="batch", disable=not progress):
                semantic, dist = prepare_inputs(batch, config, device)
                positions_at.clear()
                positions_at["full"] = dist
                generate_fixed_z(generator, semantic, dist)
                stats.images += semantic.shape[0]
    finally:
        for hook in hooks:
            hook.remove()
    silent = [f"{n} ({type(m).__name__})" for n, m in modules.items() if n not in stats.layers]
    if silent and stats.images:
        raise ValueError(f"modulation layers {silent} never called modulation(cond, size) in the forward pass; "
                         f"the probe reads and replaces modulation, so a layer must compute its scale and "
                         f"shift there (ModulatedNorm.forward calls it) rather than in a forward of its own")
    log.info("probe: captured %d layers over %d images", len(stats.layers), stats.images)
    return stats


def per_pixel(name: str, module: nn.Module, scale, shift, batch: int, size) -> tuple[torch.Tensor, torch.Tensor]:
    """``scale`` / ``shift`` of one layer as [N, C, H, W] tensors: a layer may return values that
    broadcast to that (per channel [1, C, 1, 1], one number); anything else is refused naming the layer."""
    if not (torch.is_tensor(scale) and torch.is_tensor(shift)):
        scale, shift = torch.as_tensor(scale), torch.as_tensor(shift)
    try:
        scale, shift = torch.broadcast_tensors(scale, shift)
        channels = scale.shape[1] if scale.dim() == 4 else 1
        if scale.dim() > 4:
            raise RuntimeError("more than 4 dimensions")
        return scale.expand(batch, channels, *size), shift.expand(batch, channels, *size)
    except RuntimeError as exc:
        raise ValueError(f"layer {name} ({type(module).__name__}): modulation(cond, size) returned scale "
                         f"{tuple(scale.shape)} and shift {tuple(shift.shape)}; expected tensors that broadcast "
                         f"to [N, C, {size[0]}, {size[1]}] ({exc})") from None


def variance_decomposition(stats: ProbeStatistics, exclude_dontcare: bool = False) -> pd.DataFrame:
    """One row per (layer, param, channel): variances and semantic/positional/residual ratios.

    Dontcare pixels are kept by default: for the generator 'unknown' is one more class
    channel of its input, modulated like any other. ``exclude_dontcare=True`` drops them.
    """
    exclude = [stats.dontcare] if exclude_dontcare and stats.dontcare is not None else []
    frames = []
    for depth, layer in enumerate(stats.layers.values()):
        for param in PARAMS:
            frames.append(layer.decompose(param, exclude).assign(depth=depth))
    columns = ["depth", "layer", "resolution", "param", "channel"]
    df = pd.concat(frames, ignore_index=True)
    return df[columns + [c for c in df.columns if c not in columns]]


# ratio column -> the variance column it divides by total_variance
PARTS = {"semantic_ratio": "between_variance", "positional_ratio": "positional_variance",
         "residual_ratio": "residual_variance",
         "positional_ratio_adjusted": "positional_variance_adjusted"}
COUNTS = {"channels": int, "zero_variance_channels": int}
# Columns naming the probed model that a stage adds to the channel table; the summaries keep them.
MODEL_KEYS = ("model", "run", "seed", "norm", "spade_kernel_size", "mask_factor")


def _aggregate(group: pd.DataFrame) -> pd.Series:
    """Mean over channels (NaN channels excluded) and variance-weighted ratios of one group."""
    total = group["total_variance"].sum()
    row = {r: group[r].mean() for r in PARTS}
    row.update({f"{r}_weighted": group[part].sum() / total if total > 0 else np.nan
                for r, part in PARTS.items()})
    sem = group["semantic_ratio"].dropna()
    row.update(semantic_ratio_q10=sem.quantile(0.1) if len(sem) else np.nan,
               semantic_ratio_median=sem.median() if len(sem) else np.nan,
               semantic_ratio_q90=sem.quantile(0.9) if len(sem) else np.nan,
               channels=len(group), zero_variance_channels=int(group["semantic_ratio"].isna().sum()),
               total_variance_mean=group["total_variance"].mean())
    return pd.Series(row)


def layer_summary(channels: pd.DataFrame) -> pd.DataFrame:
    """Aggregates per (layer, param): mean over channels, variance-weighted, quantiles.

    ``*_weighted`` = sum over channels of the part / sum of total variances; the plain
    ratios are means over channels with defined (non-NaN) ratios.
    """
    keys = [k for k in MODEL_KEYS if k in channels.columns]
    by = keys + ["depth", "layer", "resolution", "param"]
    out = channels.groupby(by, sort=False, dropna=False).apply(_aggregate, include_groups=False)
    return out.astype(COUNTS).reset_index()


def resolution_summary(channels: pd.DataFrame) -> pd.DataFrame:
    """Aggregates per (resolution, param) over all channels of all layers at that resolution."""
    keys = [k for k in MODEL_KEYS if k in channels.columns]
    groups = channels.groupby(keys + ["resolution", "param"], sort=False, dropna=False)
    out = groups.apply(_aggregate, include_groups=False)
    return out.astype(COUNTS).assign(layers=groups["layer"].nunique()).reset_index()


def modulation_maps(generator: nn.Module, batch: dict, layers: Iterable[str]) -> dict[str, dict]:
    """Scale, shift and label maps of the first image of ``batch`` at ``layers`` (for figures).

    Returns ``{layer: {"scale": [C, H, W], "shift": [C, H, W], "label": [H, W]}}`` on the CPU.
    """
    modules = modulation_layers(generator)
    layers = list(layers)
    maps: dict[str, dict] = {}

    def make_override(name, module, inner):
        def record(cond, size):
            scale, shift = inner(cond, size)
            maps[name] = dict(scale=scale[0].cpu(), shift=shift[0].cpu(), label=cond.label_at(size)[0].cpu())
            return scale, shift
        return record

    semantic, dist = prepare_inputs({k: v[:1] for k, v in batch.items() if torch.is_tensor(v)},
                                    generator.config, model_device(generator))
    with eval_no_grad(generator), override_modulation({n: modules[n] for n in layers}, make_override):
        generate_fixed_z(generator, semantic, dist)
    return maps
