"""SPADE to CLADE without training: every SPADE layer replaced by its per-class mean modulation.

A SPADE layer computes ``norm(x) * (1 + gamma(segmap)) + beta(segmap)`` per pixel; CLADE computes
``norm(x) * gamma[c] + beta[c]`` from a table row per class ``c``. The conversion sets

    gamma[c] = mean of (1 + gamma) over the pixels of class c,   beta[c] = mean of beta likewise

over N label maps (the probe's streaming float64 statistics, ``analysis.probe.variance``): per class, the
constant closest to SPADE's values in mean squared error. Everything else (fc, the residual
convs with their spectral-norm ``weight_orig/_u/_v``, BatchNorm running statistics, conv_img)
is copied, so the converted CLADE computes exactly what SPADE computes under the probe's
class-mean ablation, ``analysis.probe.ablation.ablate(G, stats, kind="class_mean")``.

Instance maps: CLADE appends an edge-feature channel (``inst_conv``) to every norm output, so
the convs after a norm take one more input channel. Those weights are zero, and spectral norm's
``weight_v`` gets zeros at the matching positions (the last ``kh * kw`` of the official
[in, kh, kw] order), so ``sigma = u . W v`` is unchanged and the edge feature adds nothing.
``inst_conv`` keeps its official initialisation: were it zero too, both it and the zero weights
would get zero gradients, and fine-tuning could never learn to use the edge.

Classes absent from the N label maps at some layer's resolution get that layer's overall mean
(as the ablation does), not the identity scale 1 / shift 0: the convs after the norm were trained
on modulated features, and the overall mean is the best constant guess; a warning lists them.

    spade = load_spade_generator("latest_net_G.pth", preset="ade20k")
    clade = spade_to_clade(spade, batches, images=64)
    write_clade_dir(spade, batches, "checkpoints/spade-to-clade", images=64)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import nn

from fileio import provenance, write_json_atomic
from models import (build_generator, build_generator_from_config, load_generator_dir, load_official_checkpoint,
                    save_generator_dir)
from models.checkpoint import GENERATOR_CONFIG, GENERATOR_WEIGHTS, read_state_dict
from models.presets import with_options

from analysis.probe.variance import PARAMS, ProbeStatistics, capture_modulation_statistics, modulation_layers

log = logging.getLogger(__name__)

CONVERSION_RECORD = "conversion.json"


def load_spade_generator(source, preset: str | None = None, device=None, **overrides) -> nn.Module:
    """A trained SPADE generator from our folder (``generator.json`` + ``latest_net_G.pth``) or
    from an official ``latest_net_G.pth`` (architecture from ``preset`` and ``overrides``, e.g.
    ``ngf``; ngf is read from the file when not given)."""
    source = Path(source)
    if source.is_dir() or (source.name == GENERATOR_WEIGHTS and (source.parent / GENERATOR_CONFIG).is_file()):
        generator = load_generator_dir(source if source.is_dir() else source.parent, device)
    else:
        if preset is None:
            raise ValueError(f"{str(source)!r} is a bare official checkpoint; pass preset=<name> "
                             f"(e.g. 'ade20k') so its architecture can be built")
        state, read_from = read_state_dict(source)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        conv = state.get("head_0.conv_1.weight_orig", state.get("head_0.conv_1.weight"))
        if conv is not None:
            overrides.setdefault("ngf", conv.shape[0] // 16)
        generator = build_generator(preset, "spade", device, **overrides)
        load_official_checkpoint(generator, state, source=read_from)
    if generator.config.norm != "spade":
        raise ValueError(f"{str(source)!r} holds a {generator.config.norm!r} generator; the conversion "
                         f"expects a SPADE generator (norm='spade')")
    return generator


def first_images(batches: Iterable[dict], images: int) -> Iterator[dict]:
    """The batches holding the first ``images`` samples (the last one cut to fit)."""
    if images < 1:
        raise ValueError(f"images={images}; expected at least 1 label map")
    left = images
    for batch in batches:
        size = len(batch["label"])
        if size > left:
            batch = {k: v[:left] if isinstance(v, (torch.Tensor, list, tuple)) else v for k, v in batch.items()}
            size = left
        yield batch
        left -= size
        if left == 0:
            return


def unseen_classes(stats: ProbeStatistics) -> dict[int, list[str]]:
    """{class id: layers whose statistics have no pixel of it}, in class order."""
    unseen: dict[int, list[str]] = {}
    for name, layer in stats.layers.items():
        for k in torch.nonzero(layer.count == 0).flatten().tolist():
            unseen.setdefault(k, []).append(name)
    return dict(sorted(unseen.items()))


def class_tables(stats: ProbeStatistics, layer: str) -> dict[str, torch.Tensor]:
    """{"gamma": [K, C], "beta": [K, C]} float32 per-class means of one layer's scale and shift;
    classes without pixels get the layer's overall mean (as ``probe_ablation.ablate`` does)."""
    layer_stats = stats.layers[layer]
    tables = {}
    for param in PARAMS:
        means = layer_stats.class_means(param)
        means[layer_stats.count == 0] = layer_stats.overall_mean(param)
        tables[param] = means.float()
    return tables


def _with_zero_edge_input(key: str, src: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """A residual conv's weight (or spectral-norm ``weight_v``) extended by the zero weights of
    the edge-feature input channel CLADE appends, so the conv's output and sigma are unchanged."""
    if src.dim() == 4 and ref.shape[:1] + ref.shape[2:] == src.shape[:1] + src.shape[2:] \
            and ref.shape[1] == src.shape[1] + 1:
        return torch.cat((src, src.new_zeros(src.shape[0], 1, *src.shape[2:])), 1)
    if key.endswith("weight_v") and src.dim() == 1 and ref.numel() > src.numel():
        return torch.cat((src, src.new_zeros(ref.numel() - src.numel())))
    raise ValueError(f"SPADE weight {key!r} has shape {tuple(src.shape)}; the CLADE generator expects "
                     f"{tuple(ref.shape)} (the same, or one more input channel for the instance edge)")


def clade_from_statistics(spade: nn.Module, stats: ProbeStatistics) -> nn.Module:
    """The CLADE generator equal to ``spade`` under the class-mean ablation with ``stats``.

    Same options as ``spade.config`` with ``norm='clade'``, on ``spade``'s device, in its train/eval
    mode. Raises ValueError if ``stats`` lacks a SPADE layer or the weights do not fit.
    """
    if spade.config.norm != "spade":
        raise ValueError(f"expected a SPADE generator; got norm={spade.config.norm!r}")
    layers = list(modulation_layers(spade))
    missing = [n for n in layers if n not in stats.layers]
    if missing:
        raise ValueError(f"statistics lack the SPADE layers {missing}; capture them with "
                         f"analysis.probe.variance.capture_modulation_statistics(spade, batches)")
    unseen = unseen_classes(stats)
    if unseen:
        absent = [k for k, names in unseen.items() if len(names) == len(layers)]
        log.warning("convert: %d classes have no pixel at some layer's resolution in %d label maps and get "
                    "that layer's overall mean scale/shift; absent from every layer: %s%s", len(unseen),
                    stats.images, absent[:20], f" ... ({len(absent)} in all)" if len(absent) > 20 else "")
    device = next(spade.parameters()).device
    clade = build_generator_from_config(with_options(spade.config, norm="clade"), device)
    source = spade.state_dict()
    state, tables = {}, {}
    for key, ref in clade.state_dict().items():
        layer, marker, rest = key.rpartition(".class_specified_affine.")
        if marker:
            state[key] = tables.setdefault(layer, class_tables(stats, layer))[
                "gamma" if rest == "weight" else "beta"].to(ref)
        elif ".inst_conv." in key:
            state[key] = ref  # official initialisation; its output meets zero weights (module docstring)
        elif key not in source:
            raise ValueError(f"the SPADE generator has no {key!r}; expected the backbone of a "
                             f"{spade.config.norm!r} generator built by models.build_generator")
        elif source[key].shape == ref.shape:
            state[key] = source[key]
        else:
            state[key] = _with_zero_edge_input(key, source[key], ref)
    clade.load_state_dict(state, strict=True)
    return clade.train(spade.training)


def _capture(spade: nn.Module, batches: Iterable[dict], images: int, progress: bool) -> ProbeStatistics:
    # Class means need only the constant column of the probe's regression basis.
    return capture_modulation_statistics(spade, first_images(batches, images), basis="linear", progress=progress)


def spade_to_clade(spade: nn.Module, batches: Iterable[dict], *, images: int = 64,
                   progress: bool = False) -> nn.Module:
    """CLADE generator from a trained SPADE: per-class mean modulation over the first ``images``
    label maps of ``batches`` (dataset-style dicts, see ``analysis.probe.variance``), backbone copied.

        clade = spade_to_clade(spade, loader, images=64)
    """
    return clade_from_statistics(spade, _capture(spade, batches, images, progress))


def write_clade_dir(spade: nn.Module, batches: Iterable[dict], out, *, images: int = 64,
                    source: str | None = None, progress: bool = False) -> Path:
    """Convert ``spade`` and write a generator folder (``latest_net_G.pth`` in the official
    CLADE layout, ``generator.json``) plus ``conversion.json`` (label maps used, classes never
    seen, ``source``, provenance). Returns the folder; ``models.load_generator_dir`` loads it."""
    stats = _capture(spade, batches, images, progress)
    clade = clade_from_statistics(spade, stats)
    out = save_generator_dir(clade, out)
    unseen = unseen_classes(stats)
    record = provenance(next(spade.parameters()).device, conversion="spade-to-clade", source=source,
                        images=stats.images, layers=len(stats.layers),
                        unseen_classes={str(k): len(v) for k, v in unseen.items()})
    write_json_atomic(obj=record, path=out / CONVERSION_RECORD)
    return out
