"""Closed-form parameter and MAC counts of the built-in generators, written from the architecture.

    closed_form_generator_costs(generator_config("ade20k", "clade"))   # params, macs, per role

Written from the architecture (models/blocks.py, norms.py, generator.py) like nanoGPT's
``estimate_mfu``, so the per-layer counter (:mod:`analysis.costs.layers`) can be checked against
arithmetic. ``macs`` follows fvcore's conventions, ``macs_complete`` adds the ops of
``analysis.costs.layers.SKIPPED_OP_HANDLES``. Batch 1; eval mode; conv biases are parameters but not
MACs (fvcore). They count the reference program (models/generator.py), not the fused inference
model (models/fusion.py), which folds BatchNorm away and gathers the one-hot convs' weight rows.
Written for the built-in norms; a registered plugin has no closed form (see has_closed_form).
"""
from __future__ import annotations

from models.registry import norm_spec, registered_norms


def has_closed_form(config) -> bool:
    """Whether closed-form costs exist for ``config.norm`` (the built-ins, not plugins)."""
    return norm_spec(config.norm).source is None


def _closed_form_spec(config):
    spec = norm_spec(config.norm)
    if spec.source is not None:
        raise ValueError(f"no closed-form costs for norm {config.norm!r} (registered by {spec.source}); "
                         f"the closed forms cover the built-in norms {[n for n in registered_norms() if norm_spec(n).source is None]}")
    return spec


def _conv(cin: int, cout: int, k: int, hw: int, *, bias: bool = True, spectral: bool = False) -> dict:
    weights = cout * cin * k * k
    # Spectral norm recomputes its weight every call (eval: mv + dot + div, no power iteration).
    weight_update = 2 * weights + cout if spectral else 0
    return {"params": weights + (cout if bias else 0), "macs": weights * hw, "macs_complete": weights * hw + weight_update}


def _add(total: dict, part: dict) -> dict:
    for key, value in part.items():
        total[key] = total.get(key, 0) + value
    return total


def _norm_layer_costs(channels: int, hw: int, config) -> dict:
    """One SPADE / CLADE layer without the conditioning resize (see _conditioning_costs)."""
    c = channels
    spec = _closed_form_spec(config)
    cost = {"params": 0, "macs": c * hw, "macs_complete": c * hw}  # parameter-free BatchNorm
    if not spec.class_adaptive:                              # SPADE
        k, hidden = config.spade_kernel_size, config.spade_hidden
        for conv in (_conv(config.semantic_nc, hidden, k, hw), _conv(hidden, c, k, hw), _conv(hidden, c, k, hw)):
            _add(cost, conv)
        # relu of the shared MLP; 1 + gamma; x_hat * scale; + shift
        cost["macs_complete"] += hidden * hw + 3 * c * hw
        return cost
    cost["params"] += 2 * config.class_nc * c               # gamma and beta tables
    cost["macs_complete"] += 2 * c * hw + 2 * c * hw         # two embedding lookups; mul, add
    if spec.needs_icpe:
        for _ in range(2):                                   # dist_conv_w, dist_conv_b (2 -> 1, 1x1)
            _add(cost, _conv(2, 1, 1, hw))
        cost["macs_complete"] += 2 * (hw + c * hw)           # gamma * (1 + w . icpe), same for beta
    if not config.no_instance:
        _add(cost, _conv(1, 1, 1, hw))                       # inst_conv on the edge map
        cost["macs_complete"] += (c + 1) * hw                # cat of the edge feature
    return cost


def _conditioning_costs(h: int, w: int, config) -> dict:
    """Bringing the conditioning maps to (h, w); done once per resolution (Conditioning)."""
    hw, full = h * w, config.output_size
    resized = (h, w) != tuple(full)
    spec = _closed_form_spec(config)
    if not spec.class_adaptive:                              # SPADE resizes the semantic map
        macs = config.semantic_nc * hw if resized else 0
        return {"params": 0, "macs": macs, "macs_complete": macs}
    channels = 1 + int(not config.no_instance) + 2 * int(spec.needs_icpe)  # label, edge, icpe
    macs = channels * hw if resized else 0
    # label index map: float() of the full-size map, then long() of the resized one
    return {"params": 0, "macs": macs, "macs_complete": macs + full[0] * full[1] + hw}


def closed_form_block_costs(fin: int, fout: int, h: int, w: int, config, *,
                            resize: bool = True) -> dict:
    """Params and MACs of one residual block (models/blocks.py) at resolution ``h x w``.

    ``config`` gives the norm kind, instance edge, SPADE width and the output size;
    ``resize``: whether this block is the first at its resolution, and so pays for
    bringing the conditioning maps there (Conditioning shares them with later blocks).
    Returns ``{"params", "macs" (fvcore convention), "macs_complete"}`` for batch 1. Not
    included: CLADE's label argmax, done once per forward in the first norm layer
    (``class_nc * H * W`` at the output size, see :func:`closed_form_generator_costs`).
    Only ``param_free_norm='batch'`` is covered.
    """
    if config.param_free_norm != "batch":
        raise ValueError(f"closed-form costs cover param_free_norm='batch', got {config.param_free_norm!r}")
    hw = h * w
    extra = _closed_form_spec(config).extra_channels(config)
    fmid = min(fin, fout)
    sn = config.spectral
    cost = {"params": 0, "macs": 0, "macs_complete": 0}
    _add(cost, _conv(fin + extra, fmid, 3, hw, spectral=sn))
    _add(cost, _conv(fmid + extra, fout, 3, hw, spectral=sn))
    norm_channels = [fin, fmid]
    if fin != fout:
        _add(cost, _conv(fin + extra, fout, 1, hw, bias=False, spectral=sn))
        norm_channels.append(fin)
    for channels in norm_channels:
        _add(cost, _norm_layer_costs(channels, hw, config))
    if resize:
        _add(cost, _conditioning_costs(h, w, config))
    # two leaky_relu (on norm outputs, edge channel included) and the residual add
    cost["macs_complete"] += (fin + extra) * hw + (fmid + extra) * hw + fout * hw
    return cost


def generator_block_layout(config) -> list[dict]:
    """The residual blocks of a generator in call order: name, fin, fout, (h, w), resize."""
    nf, (h, w) = config.ngf, config.latent_size
    layout = [("head_0", 16 * nf, 16 * nf, 1), ("G_middle_0", 16 * nf, 16 * nf, 2)]
    scale = 4 if config.num_upsampling_layers in ("more", "most") else 2
    layout.append(("G_middle_1", 16 * nf, 16 * nf, scale))
    channels = [16 * nf, 8 * nf, 4 * nf, 2 * nf, nf] + ([nf // 2] if config.num_upsampling_layers == "most" else [])
    for i in range(len(channels) - 1):
        scale *= 2
        layout.append((f"up_{i}", channels[i], channels[i + 1], scale))
    seen, blocks = set(), []
    for name, fin, fout, s in layout:
        blocks.append({"name": name, "fin": fin, "fout": fout, "size": (h * s, w * s), "resize": s not in seen})
        seen.add(s)
    return blocks


def closed_form_generator_costs(config) -> dict:
    """Params and MACs of a whole generator (batch 1), with the per-block breakdown.

    Returns ``{"params", "macs", "macs_complete", "blocks": {name: block costs}}``.
    Covers ``use_vae=False`` (the segmap-fed generator, as in every official preset).
    """
    if config.use_vae:
        raise ValueError("closed-form generator costs cover use_vae=False only")
    (sh, sw), (H, W) = config.latent_size, config.output_size
    final_nc = config.ngf // 2 if config.num_upsampling_layers == "most" else config.ngf
    total = {"params": 0, "macs": 0, "macs_complete": 0}
    down = config.semantic_nc * sh * sw                    # segmap resized to the latent size
    _add(total, {"macs": down, "macs_complete": down})
    _add(total, _conv(config.semantic_nc, 16 * config.ngf, 3, sh * sw))      # fc
    blocks = {}
    previous_size = (sh, sw)
    for block in generator_block_layout(config):
        (h, w) = block["size"]
        if (h, w) != previous_size:                        # nearest 2x upsampling of the features
            grow = block["fin"] * h * w
            _add(total, {"macs": grow, "macs_complete": grow})
        previous_size = (h, w)
        blocks[block["name"]] = closed_form_block_costs(block["fin"], block["fout"], h, w, config,
                                                        resize=block["resize"])
        _add(total, blocks[block["name"]])
    if _closed_form_spec(config).class_adaptive:
        total["macs_complete"] += config.class_nc * H * W  # label argmax, once per forward
        blocks["head_0"]["macs_complete"] += config.class_nc * H * W
    _add(total, _conv(final_nc, 3, 3, H * W))                                 # conv_img
    total["macs_complete"] += final_nc * H * W + 3 * H * W                    # leaky_relu, tanh
    total["blocks"] = blocks
    return total


def official_resize_macs(config) -> int:
    """fvcore MACs of the conditioning resizes *as the official code does them*.

    The official SPADE / CLADE layers each resize the whole semantic map (``semantic_nc``
    channels, and CLADE-ICPE also the 2-channel ICPE map) to their own resolution, even
    when it already has that size: ``sum over norm layers of channels * h * w``. Our
    Conditioning resizes once per resolution and CLADE only the label index map, so our
    fvcore totals are lower by ``official_resize_macs - our resize MACs``.
    """
    channels = config.semantic_nc + 2 * int(norm_spec(config.norm).needs_icpe)
    total = 0
    for block in generator_block_layout(config):
        h, w = block["size"]
        layers = 2 + int(block["fin"] != block["fout"])
        total += layers * channels * h * w
    return total
