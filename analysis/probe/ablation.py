"""Ablations of the modulation layers: what the output loses without their spatial detail.

    stats = capture_modulation_statistics(G, batches)         # analysis.probe.variance
    with ablate(G, stats, kind="class_mean"):                 # SPADE collapsed into a class table
        fake = G(semantic)
    effects = ablation_effects(G, stats, batches)             # |change| and PSNR of the output

``class_mean`` replaces a layer's per-pixel scale / shift by its per-class means (what CLADE can
express); ``no_position`` feeds a layer that reads the ICPE map a zero map (CLADE-ICPE without
its positional term). Both act through the layers' ``modulation_override``, so they compose
with any other override and leave the generator as it was on exit.
"""
from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import Iterable, Iterator

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from models.generator import check_icpe_data
from models.norms import Conditioning
from models.registry import norm_spec

from analysis.probe.variance import (PARAMS, LayerStatistics, ProbeStatistics, eval_no_grad, generate_fixed_z, model_device,
                    modulation_layers, override_modulation, prepare_inputs)

log = logging.getLogger(__name__)
# Sets of unseen classes already logged by ablation_effects in this process.
_REPORTED_UNSEEN: set[tuple[int, ...]] = set()

IMAGE_PEAK_TO_PEAK = 2.0  # generator outputs lie in [-1, 1]


def _lookup(table: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Per-pixel rows of ``table`` [K, C] for ``label`` [N, H, W] -> [N, C, H, W]."""
    return F.embedding(label, table).permute(0, 3, 1, 2)


ABLATIONS = ("class_mean", "no_position")


def _uses_icpe(generator: nn.Module) -> bool:
    """Whether the generator's norm reads the ICPE map (its registry entry says so)."""
    return norm_spec(generator.config.norm).needs_icpe


@contextmanager
def ablate(generator: nn.Module, stats: ProbeStatistics | None, layers: Iterable[str] | None = None,
           kind: str = "class_mean") -> Iterator[None]:
    """Run ``generator`` with some modulation layers ablated (wraps any evaluation).

    ``class_mean``: each layer's scale / shift replaced by its per-class mean from ``stats``
    (SPADE collapsed into a CLADE-like table; classes the probe never saw get the layer's
    overall mean). ``no_position``: layers of a norm that reads the ICPE map evaluated with a
    zero map (CLADE-ICPE: ``gamma[c] * (1 + b_w)``: the position dependence is gone, the
    constant conv bias stays).
    ``layers``: module names (default: every layer the kind applies to).

        with ablate(G, stats, layers=["up_3.norm_0"]):
            fake = G(semantic)
    """
    modules = modulation_layers(generator)
    if kind not in ABLATIONS:
        raise ValueError(f"unknown ablation kind {kind!r}; expected one of {ABLATIONS}")
    if layers is None:
        layers = [n for n in modules if kind == "class_mean" or _uses_icpe(generator)]
        if not layers:
            raise ValueError(f"kind='no_position' needs layers that read the ICPE map (e.g. CLADE-ICPE); "
                             f"this generator has norm={generator.config.norm!r}")
    layers = list(layers)
    unknown = [n for n in layers if n not in modules]
    if unknown:
        raise ValueError(f"unknown modulation layer(s) {unknown}; this generator has {list(modules)}")
    if kind == "no_position" and not _uses_icpe(generator):
        raise ValueError(f"kind='no_position' applies to layers that read the ICPE map (e.g. CLADE-ICPE) only; "
                         f"got {layers} of norm={generator.config.norm!r}")
    if kind == "class_mean":
        if stats is None or any(n not in stats.layers for n in layers):
            raise ValueError("kind='class_mean' needs statistics of these layers from "
                             "capture_modulation_statistics(generator, batches)")
        tables = {n: _class_mean_tables(stats.layers[n], model_device(generator)) for n in layers}

    def make_override(name, module, inner):
        if kind == "class_mean":
            gamma, beta = tables[name]
            return lambda cond, size: (_lookup(gamma, cond.label_at(size)),
                                       _lookup(beta, cond.label_at(size)))
        def no_position(cond, size):
            zero = Conditioning(cond.semantic, cond.class_nc, cond.has_edge, dist=torch.zeros_like(cond.dist))
            return inner(zero, size)
        return no_position

    with override_modulation({n: modules[n] for n in layers}, make_override):
        yield


def _class_mean_tables(layer: LayerStatistics, device) -> tuple[torch.Tensor, torch.Tensor]:
    tables = []
    for param in PARAMS:
        means = layer.class_means(param)
        means[layer.count == 0] = layer.overall_mean(param)
        tables.append(means.to(device=device, dtype=torch.float32))
    return tables[0], tables[1]


def ablation_effects(generator: nn.Module, stats: ProbeStatistics | None, batches: Iterable[dict], *,
                     kinds: Iterable[str] | None = None, per_layer: bool = True,
                     progress: bool = True) -> pd.DataFrame:
    """Change of the output when layers are ablated: all at once and (``per_layer``) one at a time.

    Columns: kind, ablated ('all' or a layer name), resolution, mean_abs_diff, max_abs_diff,
    psnr_db (vs the unablated output; peak-to-peak 2 for outputs in [-1, 1], MSE pooled over
    all pixels and images; inf when identical), images. ``kinds`` default: class_mean, plus
    no_position for CLADE-ICPE generators.
    """
    check_icpe_data(generator.config, batches, "the ablation's batches")
    modules = modulation_layers(generator)
    if kinds is None:
        kinds = ["class_mean"] + (["no_position"] if _uses_icpe(generator) else [])
    order = list(stats.layers) if stats else list(modules)  # forward (depth) order when known
    targets = []
    for kind in kinds:
        names = [n for n in order if kind == "class_mean" or _uses_icpe(generator)]
        targets.append((kind, "all", None))
        if per_layer:
            targets += [(kind, n, [n]) for n in names]
    unseen = sorted({k for layer in (stats.layers.values() if stats else [])
                     for k in torch.nonzero(layer.count == 0).flatten().tolist()})
    if unseen:
        # One stage ablates many generators of one dataset, which miss the same classes: said once.
        level = logging.DEBUG if tuple(unseen) in _REPORTED_UNSEEN else logging.INFO
        _REPORTED_UNSEEN.add(tuple(unseen))
        log.log(level, "probe: %d classes (%s%s) missing from some layer's statistics; class_mean gives them the "
                "layer's overall mean (said once for these classes)", len(unseen), unseen[:10],
                ", ..." if len(unseen) > 10 else "")
    totals = {t[:2]: dict(abs=0.0, sq=0.0, max=0.0, n=0) for t in targets}
    images = 0
    device = model_device(generator)
    with eval_no_grad(generator):
        for i, batch in enumerate(tqdm(batches, desc="probe: ablation", unit="batch",
                                       disable=not progress)):
            semantic, dist = prepare_inputs(batch, generator.config, device)
            reference = generate_fixed_z(generator, semantic, dist, seed=i).double()
            images += semantic.shape[0]
            for kind, name, layers in targets:
                with ablate(generator, stats, layers, kind):
                    diff = generate_fixed_z(generator, semantic, dist, seed=i).double() - reference
                acc = totals[(kind, name)]
                acc["abs"] += diff.abs().sum().item()
                acc["sq"] += diff.pow(2).sum().item()
                acc["max"] = max(acc["max"], diff.abs().max().item())
                acc["n"] += diff.numel()
    resolution = {n: l.resolution for n, l in (stats.layers.items() if stats else [])}
    rows = []
    for (kind, name), acc in totals.items():
        mse = acc["sq"] / acc["n"]
        res = resolution.get(name)
        rows.append(dict(kind=kind, ablated=name, resolution=f"{res[0]}x{res[1]}" if res else "all",
                         mean_abs_diff=acc["abs"] / acc["n"], max_abs_diff=acc["max"],
                         psnr_db=10 * math.log10(IMAGE_PEAK_TO_PEAK ** 2 / mse) if mse > 0 else math.inf,
                         images=images))
    return pd.DataFrame(rows)
