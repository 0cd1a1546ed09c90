"""Where the parameters and multiply-adds of SPADE / CLADE / CLADE-ICPE go, layer by layer.

    G = build_generator("ade20k", "clade", device="cpu")
    args, kwargs = generator_inputs(G.config)
    table = layer_costs(G, args, kwargs=kwargs)      # one row per (module, role)
    table.groupby("role")[["params", "gmacs_fvcore", "gmacs_complete"]].sum()

Two counts per row, both in GMACs (1e9 multiply-accumulates):

- ``gmacs_fvcore``: fvcore's ``FlopCountAnalysis``, unchanged. fvcore counts one fused
  multiply-add as one "flop", so its numbers are MACs. It counts convolutions, linear layers,
  batch/instance norm (eval batch norm without affine: 1 per element) and nearest upsampling
  (1 per output element), and *skips* elementwise arithmetic, activations, ``embedding``,
  ``argmax``, concatenation, dtype conversions and spectral norm's ``mv``/``dot``/``div``.
  These are the numbers the official tables report.
- ``gmacs_complete``: fvcore plus handles for the ops it skips, in MAC-equivalents:
  elementwise arithmetic and activations (add, sub, mul, div, relu, leaky_relu, tanh, ...)
  = 1 per output element; data movement that makes a new tensor (cat, embedding / gather /
  index lookups, a dtype conversion) = 1 per output element; argmax = 1 per input element;
  ``mv`` = rows x cols, ``dot`` = length; average pooling = kernel area per output element.
  A memory-bound op costs far more time per "MAC" than a convolution, so this column makes
  CLADE's real work visible; it does not predict time either. Ops still uncounted after
  these handles are listed in ``table.attrs["uncounted_ops"]`` and the ``uncounted_ops`` column.

Roles (column ``role``): everything inside a ``norm_0/norm_1/norm_s`` module is modulation,
as in the reference tables; see :data:`ROLES`.

Which program is counted: the reference generator (``models.Generator``, the official ops);
see :data:`PROGRAM_COUNTED`. The fused inference model that the latency tables time
(``models.fuse_for_inference``) does fewer multiply-adds for the same output.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from math import prod
from pathlib import Path

import pandas as pd
import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from data.labels import make_semantic
from models import build_encoder, build_generator_from_config, losses
from models.discriminator import MultiscaleDiscriminator
from models.init import init_official
from models.losses import VGGLoss
from models.train_recipe import TrainRecipe, discriminator_config_for
from models.presets import DiscriminatorConfig, canonical_norm, canonical_preset, generator_config, label_config
from models.vgg import VGG19Features
from models.registry import norm_spec, registered_norms

log = logging.getLogger(__name__)

ROLES = {
    "modulation_resize": "conditioning maps brought to the layer's resolution: segmap / label / "
                         "edge / ICPE resize, label argmax, dtype casts (in the first norm layer "
                         "that asks for a resolution)",
    "modulation_spade_shared": "SPADE mlp_shared conv + ReLU",
    "modulation_spade_gamma": "SPADE mlp_gamma conv",
    "modulation_spade_beta": "SPADE mlp_beta conv",
    "modulation_clade_affine": "CLADE per-class gamma/beta tables and their lookup (embedding)",
    "modulation_icpe": "CLADE-ICPE dist_conv_w/b and the scaling gamma*(1+w.icpe), beta*(1+w'.icpe)",
    "modulation_edge": "CLADE inst_conv on the instance-edge map",
    "modulation_norm": "parameter-free BatchNorm / InstanceNorm of the norm layer",
    "modulation_plugin": "the other submodules of a plugin's norm layer (models.register_norm): its own "
                         "scale/shift predictors",
    "modulation_apply": "x_hat * scale + shift (SPADE: scale = 1 + gamma) and CLADE's edge concatenation",
    "backbone": "everything outside the norm layers: residual convs, fc, conv_img, activations, "
                "upsampling, residual adds, spectral-norm weight recomputation",
}
PROGRAM_COUNTED = ("reference generator (models.Generator: the official ops, plain convolutions); the fused "
                   "inference model timed by the latency tables (models.fuse_for_inference) folds BatchNorm into "
                   "the modulation and replaces the one-hot convs (fc, SPADE's mlp_shared) by row gathers, so it "
                   "does fewer multiply-adds than counted here")
NORM_LAYER_NAMES = ("norm_0", "norm_1", "norm_s")
_RESIZE_OPS = {"upsample_nearest2d", "argmax", "to"}
# Pure metadata / view ops: truly zero work. Every other op is either counted or reported.
_ZERO_COST_OPS = {f"aten::{name}" for name in (
    "Int", "ScalarImplicit", "size", "numel", "dim", "view", "reshape", "permute", "expand",
    "expand_as", "flatten", "squeeze", "unsqueeze", "select", "slice", "narrow", "t", "transpose",
    "detach", "chunk", "split", "split_with_sizes", "unbind", "alias", "empty", "new_empty",
    "dropout", "feature_dropout")}
_MATRIX_OPS = ("conv", "linear", "addmm", "mm", "matmul", "bmm", "einsum")


def _numel(value) -> int:
    shape = get_shape(value)
    return prod(shape) if shape else 1


def _per_output_element(inputs, outputs) -> int:
    return _numel(outputs[0])


def _per_input_element(inputs, outputs) -> int:
    return _numel(inputs[0])


def _dtype_conversion(inputs, outputs) -> int:
    same = inputs[0].type().scalarType() == outputs[0].type().scalarType()
    return 0 if same else _numel(outputs[0])


def _mv(inputs, outputs) -> int:
    return _numel(inputs[0])


def _int_list(value) -> list[int]:
    constant = value.toIValue()
    if constant is None:  # a list built in the graph: read its constant elements
        constant = [v.toIValue() for v in value.node().inputs()]
    return list(constant)


def _avg_pool2d(inputs, outputs) -> int:
    kernel = _int_list(inputs[1])
    return _numel(outputs[0]) * prod(kernel if len(kernel) == 2 else kernel * 2)


# The ops fvcore skips, with the cost convention of the module docstring.
SKIPPED_OP_HANDLES = {
    **{f"aten::{op}": _per_output_element for op in (
        "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "abs",
        "relu", "relu_", "leaky_relu", "leaky_relu_", "tanh", "sigmoid", "clamp", "clamp_",
        "cat", "stack", "embedding", "gather", "index", "index_select", "constant_pad_nd",
        "contiguous", "copy_", "clone")},
    "aten::to": _dtype_conversion,
    "aten::argmax": _per_input_element,
    "aten::max": _per_input_element,
    "aten::mv": _mv,
    "aten::dot": _per_input_element,
    "aten::avg_pool2d": _avg_pool2d,
}
_SKIPPED_OP_NAMES = {name.split("::")[1] for name in SKIPPED_OP_HANDLES}


class _Call(nn.Module):
    """Binds keyword inputs (e.g. ``dist``) so fvcore's tracer sees tensors only."""

    def __init__(self, model: nn.Module, kwargs: dict):
        super().__init__()
        self.model = model
        self.kwargs = kwargs

    def forward(self, *args):
        return self.model(*args, **self.kwargs)


def _first_tensor(obj):
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        for item in obj:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _record_stages(model: nn.Module) -> tuple[dict, list]:
    """Forward hooks storing each module's output resolution as 'HxW'."""
    stages: dict[str, str] = {}

    def hook(name):
        def record(module, inputs, output):
            tensor = _first_tensor(output)
            if tensor is not None and tensor.dim() == 4:
                stages.setdefault(name, f"{int(tensor.shape[-2])}x{int(tensor.shape[-1])}")
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules() if name]
    return stages, handles


def module_role(name: str) -> str:
    """Role of a module's parameters and ops, from its dotted name (see :data:`ROLES`)."""
    parts = name.split(".")
    norm_at = next((i for i, p in enumerate(parts) if p in NORM_LAYER_NAMES), None)
    if norm_at is None:
        return "backbone"
    inner = parts[norm_at + 1:]
    if not inner:
        return "modulation_apply"
    if inner[0] == "class_specified_affine":
        return "modulation_icpe" if len(inner) > 1 else "modulation_clade_affine"
    return {"mlp_shared": "modulation_spade_shared", "mlp_gamma": "modulation_spade_gamma",
            "mlp_beta": "modulation_spade_beta", "param_free_norm": "modulation_norm",
            "inst_conv": "modulation_edge"}.get(inner[0], "modulation_plugin")


def op_role(name: str, op: str) -> str:
    """Role of one op run directly by module ``name`` (refines :func:`module_role`)."""
    role = module_role(name)
    if role == "modulation_apply" and op in _RESIZE_OPS:
        return "modulation_resize"
    if role == "modulation_clade_affine" and op != "embedding":
        return "modulation_icpe"  # the gamma * (1 + w . icpe) arithmetic of ClassAffine
    return role


def _exclusive(per_module: dict[str, Counter], modules: dict[str, nn.Module]) -> dict[str, Counter]:
    """Per-module counters without the ops of child modules (fvcore's are inclusive)."""
    own = {}
    for name, module in modules.items():
        counts = Counter(per_module.get(name, Counter()))
        for child_name, _ in module.named_children():
            counts.subtract(per_module.get(f"{name}.{child_name}" if name else child_name, Counter()))
        own[name] = Counter({op: n for op, n in counts.items() if n})
    return own


def _fmt_ops(counter: Counter) -> str:
    return ", ".join(f"{op} x{n}" for op, n in sorted(counter.items()))


def layer_costs(model: nn.Module, inputs: tuple, *, kwargs: dict | None = None) -> pd.DataFrame:
    """Per-module params and GMACs (fvcore and complete) of one forward pass of ``model``.

    One row per (module, role) that owns parameters or runs ops itself (ops of child modules
    belong to the children, so the rows sum to the totals). Columns: ``module``, ``type``,
    ``role``, ``stage`` (the module's output resolution 'HxW'; 'mixed' for the root, whose
    own ops span resolutions), ``params``, ``gmacs_fvcore``, ``gmacs_complete``, ``ops``
    (the ops the row counts) and ``uncounted_ops``. ``attrs`` hold ``uncounted_ops``
    (op -> occurrences), ``gmacs_by_op`` (complete GMACs per op), ``fvcore_ops`` (the ops
    fvcore counts itself) and the totals.

    The model is put in eval mode and traced under ``no_grad`` with torch.jit (fvcore), so
    the inputs must be real tensors on the model's device; the batch size is that of the
    inputs. Caveat: torch.jit tracing runs the forward once; data-dependent Python control
    flow is recorded for these inputs only.
    """
    model.eval()
    wrapped = _Call(model, kwargs or {})
    analysis = FlopCountAnalysis(wrapped, tuple(inputs))
    analysis._ignored_ops = set(_ZERO_COST_OPS)  # count or report everything else
    analysis.set_op_handle(**SKIPPED_OP_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    stages, handles = _record_stages(model)
    try:
        with torch.no_grad():
            per_module = analysis.by_module_and_operator()
    finally:
        for handle in handles:
            handle.remove()
    modules = dict(model.named_modules())
    prefixed = lambda name: f"model.{name}" if name else "model"
    own_ops = _exclusive({name: per_module.get(prefixed(name), Counter()) for name in modules}, modules)
    own_uncounted = _exclusive({name: analysis.unsupported_ops(prefixed(name)) for name in modules}, modules)

    rows = []
    for name, module in modules.items():
        by_role: dict[str, Counter] = {}
        for op, macs in own_ops[name].items():
            by_role.setdefault(op_role(name, op), Counter())[op] += macs
        params = sum(p.numel() for p in module.parameters(recurse=False))
        if params or own_uncounted[name]:
            by_role.setdefault(module_role(name), Counter())
        for role, ops in by_role.items():
            fvcore = sum(n for op, n in ops.items() if op not in _SKIPPED_OP_NAMES)
            rows.append({
                "module": name or "(root)", "type": type(module).__name__, "role": role,
                "stage": stages.get(name, "mixed") if name else "mixed",
                "params": params if role == module_role(name) else 0,
                "gmacs_fvcore": fvcore / 1e9, "gmacs_complete": sum(ops.values()) / 1e9,
                "ops": ", ".join(sorted(ops)),
                "uncounted_ops": _fmt_ops(own_uncounted[name]) if role == module_role(name) else "",
            })
    table = pd.DataFrame(rows)
    table = table[(table.params > 0) | (table.gmacs_complete > 0) | (table.uncounted_ops != "")]
    table = table.reset_index(drop=True)
    by_op = Counter()
    for counts in own_ops.values():
        by_op.update(counts)
    table.attrs.update(
        uncounted_ops=dict(analysis.unsupported_ops()),
        gmacs_by_op={op: n / 1e9 for op, n in sorted(by_op.items())},
        fvcore_ops=sorted(op for op in by_op if op not in _SKIPPED_OP_NAMES),
        params=sum(p.numel() for p in model.parameters()),
        gmacs_fvcore=float(table.gmacs_fvcore.sum()), gmacs_complete=float(table.gmacs_complete.sum()))
    return table


def role_totals(table: pd.DataFrame) -> pd.DataFrame:
    """Params and GMACs summed per role (index: role)."""
    return table.groupby("role")[["params", "gmacs_fvcore", "gmacs_complete"]].sum()


def is_modulation(role) -> bool:
    return str(role).startswith("modulation")


def generator_inputs(config, batch: int = 1, *, device="cpu", seed: int = 0) -> tuple[tuple, dict]:
    """``(args, kwargs)`` for ``G(*args, **kwargs)``: a blocky random label map, its one-hot
    semantic input (+ instance edges) and, for CLADE-ICPE, a random ICPE map in (-1, 1).

    Costs and latency do not depend on the label values, only on shapes; the ICPE map is
    random because computing a real one is data loading, not generator work.
    """
    gen = torch.Generator().manual_seed(seed)
    h, w = config.output_size
    coarse = (batch, 1, max(1, h // 16), max(1, w // 16))
    label = torch.randint(0, config.class_nc, coarse, generator=gen)
    label = torch.nn.functional.interpolate(label.float(), size=(h, w), mode="nearest").long()
    instance = torch.randint(0, 1000, coarse, generator=gen)
    instance = torch.nn.functional.interpolate(instance.float(), size=(h, w), mode="nearest").long()
    semantic = make_semantic(label, instance, config).to(device)
    kwargs = {}
    if norm_spec(config.norm).needs_icpe:
        kwargs["dist"] = (torch.rand(batch, 2, h, w, generator=gen) * 2 - 1).to(device)
    return (semantic,), kwargs


# ----------------------------------------------------------------------------------------
# Closed-form counts, written from the architecture (models/blocks.py, norms.py,
# generator.py) like nanoGPT's estimate_mfu, so the counters can be checked against
# arithmetic. ``macs`` follows fvcore's conventions, ``macs_complete`` adds the ops of
# SKIPPED_OP_HANDLES. Batch 1; eval mode; conv biases are parameters but not MACs (fvcore).
# They count the reference program (models/generator.py), not the fused inference model
# (models/fusion.py), which folds BatchNorm away and gathers the one-hot convs' weight rows.
# Written for the built-in norms; a registered plugin has no closed form (see has_closed_form).

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


# ----------------------------------------------------------------------------------------
# Cross-checks with torch's own counter and with the official numbers

def flop_counter_gmacs(model: nn.Module, inputs: tuple, *, kwargs: dict | None = None) -> dict:
    """GMACs per op of one eval forward, from ``torch.utils.flop_counter.FlopCounterMode``.

    FlopCounterMode counts 2 flops per multiply-add and only matrix ops (convolution, mm,
    addmm, bmm, attention); the values here are its flops / 2. Works on the meta device,
    so full-size models cost no compute: ``build_generator(..., device="meta")``.
    """
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs, **(kwargs or {}))
    return {str(op).removeprefix("aten.").removesuffix(".default"): flops / 2e9
            for op, flops in counter.get_flop_counts()["Global"].items()}


def matrix_gmacs(table: pd.DataFrame) -> float:
    """GMACs of convolutions and matrix products in a :func:`layer_costs` table."""
    return sum(v for op, v in table.attrs["gmacs_by_op"].items() if op in _MATRIX_OPS)


def flop_counter_crosscheck(table: pd.DataFrame, model: nn.Module, inputs: tuple, *,
                            kwargs: dict | None = None) -> dict:
    """FlopCounterMode total (as GMACs) against fvcore's conv / linear GMACs of ``table``."""
    counted = sum(flop_counter_gmacs(model, inputs, kwargs=kwargs).values())
    fvcore = matrix_gmacs(table)
    return {"gmacs_flopcounter": counted, "gmacs_fvcore_matrix_ops": fvcore,
            "rel_error": abs(counted - fvcore) / fvcore}


def load_reference_costs(reference_dir) -> pd.DataFrame:
    """The official generator / discriminator counts from ``<reference_dir>/README.md``.

    Columns: preset, norm ('discriminator' for D), params, gmacs_fvcore, modulation_params,
    modulation_gmacs_fvcore (NaN for D). Raises FileNotFoundError if the file is absent.
    """
    text = (Path(reference_dir) / "README.md").read_text()
    rows = []
    number = lambda s: float(s.replace(",", ""))
    for m in re.finditer(r"^\|\s*(\w+)\s*\|\s*(spade|clade|clade_icpe)\s*\|\s*([\d,]+)\s*\|\s*([\d.]+)\s*\|"
                         r"\s*([\d,]+)\s*\|\s*([\d.]+)\s*\|", text, flags=re.M):
        rows.append({"preset": canonical_preset(m[1]), "norm": canonical_norm(m[2]), "params": int(number(m[3])),
                     "gmacs_fvcore": number(m[4]), "modulation_params": int(number(m[5])),
                     "modulation_gmacs_fvcore": number(m[6])})
    for m in re.finditer(r"(cityscapes|ade20k|coco) ([\d,]+)(?: params)? / (\d+\.\d+)", text):
        rows.append({"preset": canonical_preset(m[1]), "norm": "discriminator", "params": int(number(m[2])),
                     "gmacs_fvcore": number(m[3])})
    if not rows:
        raise ValueError(f"no cost table found in {reference_dir}/README.md")
    return pd.DataFrame(rows)


def training_step_gmacs(config, *, recipe: TrainRecipe | None = None, batch: int = 1, d_config=None) -> dict:
    """Matrix-op GMACs of one official training iteration, counted by running it.

    Runs, on the meta device (shapes only, no compute) under FlopCounterMode, the trainer's
    own loss functions (:func:`models.losses.generator_losses` and
    :func:`models.losses.discriminator_losses`, as ``models.trainer.Trainer.train_step``
    does) and their backward: a generator step (encoder when ``config.use_vae``, G in train
    mode, D frozen on ``cat(fake, real)``, the recipe's loss terms) and a discriminator step
    (G without grad, D on ``cat(fake.detach(), real)``). ``recipe`` (default: the official
    :class:`TrainRecipe`) decides the loss terms, e.g. ``use_vgg``. Counts convolutions and
    matrix products only (FlopCounterMode flops / 2); elementwise work and the optimizer
    updates are not included. ``d_config``: the discriminator (default: the official one for
    ``config``'s labels). Returns GMACs for ``g_forward`` (eval), ``g_step``, ``d_step``,
    ``vgg`` (its share of the G step) and ``train_step``.
    """
    recipe = recipe or TrainRecipe()

    def count(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 2e9

    G = build_generator_from_config(config, "meta")
    E = build_encoder(config, "meta") if config.use_vae else None
    with torch.device("meta"):
        D = MultiscaleDiscriminator(d_config or discriminator_config_for(config))
        vgg_loss = VGGLoss(VGG19Features()) if recipe.use_vgg else None
    (semantic,), kwargs = generator_inputs(config, batch, device="meta")
    real = torch.empty(batch, 3, *config.output_size, device="meta")
    shared = dict(recipe=recipe, dist=kwargs.get("dist"), encoder=E)

    def generator_step(vgg):
        losses.generator_losses(G, D, semantic, real, vgg_loss=vgg, **shared).total.backward()

    def discriminator_step():
        losses.discriminator_losses(G, D, semantic, real, **shared).total.backward()

    G.eval()
    with torch.no_grad():
        g_forward = count(lambda: G(semantic, **kwargs))
    for net in (G, D, E):
        if net is not None:
            net.train()
    g_step = count(lambda: generator_step(vgg_loss))
    vgg_part = g_step - count(lambda: generator_step(None)) if vgg_loss is not None else 0.0
    d_step = count(discriminator_step)
    return {"g_forward": g_forward, "g_step": g_step, "d_step": d_step, "vgg": vgg_part,
            "train_step": g_step + d_step}


# ----------------------------------------------------------------------------------------
# Summary across presets and norms

OVERHEAD_DEFINITION = ("modulation_overhead = modulation GMACs / backbone GMACs, where modulation is "
                       "everything inside the norm_0/norm_1/norm_s layers and backbone is the rest of "
                       "the generator: the compute modulation adds on top of the backbone")


def _modulation(table: pd.DataFrame) -> pd.DataFrame:
    return table[table.role.map(is_modulation)]


def generator_costs(config, *, device="cpu") -> pd.DataFrame:
    """:func:`layer_costs` of a freshly built generator for ``config`` (batch 1)."""
    G = build_generator_from_config(config, device)
    args, kwargs = generator_inputs(config, device=device)
    return layer_costs(G, args, kwargs=kwargs)


def generator_gmacs(config) -> float:
    """fvcore GMACs of one image: the closed form for a built-in norm, counted by fvcore for a
    plugin's norm (which has no closed form)."""
    if has_closed_form(config):
        return closed_form_generator_costs(config)["macs"] / 1e9
    return float(generator_costs(config).gmacs_fvcore.sum())


def discriminator_costs(config, *, device="cpu") -> pd.DataFrame:
    """:func:`layer_costs` of the official discriminator matching ``config``'s labels and size."""
    with torch.device(device):
        D = init_official(MultiscaleDiscriminator(DiscriminatorConfig(**vars(label_config(config)))))
    x = torch.randn(1, D.config.input_nc, *config.output_size, device=device)
    return layer_costs(D, (x,))


def summarize_generator(table: pd.DataFrame, config) -> dict:
    """One summary row from a generator's :func:`layer_costs` table (see :func:`cost_tables`)."""
    mod = _modulation(table)
    resize = float(table.loc[table.role == "modulation_resize", "gmacs_fvcore"].sum())
    official_resize = official_resize_macs(config) / 1e9
    row = {
        "params": int(table.params.sum()), "modulation_params": int(mod.params.sum()),
        "gmacs_fvcore": float(table.gmacs_fvcore.sum()), "modulation_gmacs_fvcore": float(mod.gmacs_fvcore.sum()),
        "gmacs_complete": float(table.gmacs_complete.sum()),
        "modulation_gmacs_complete": float(mod.gmacs_complete.sum()),
    }
    row["modulation_param_share"] = row["modulation_params"] / row["params"]
    for kind in ("fvcore", "complete"):
        backbone = row[f"gmacs_{kind}"] - row[f"modulation_gmacs_{kind}"]
        suffix = "" if kind == "fvcore" else "_complete"
        row[f"modulation_overhead{suffix}"] = row[f"modulation_gmacs_{kind}"] / backbone
    row["gmacs_fvcore_official_resize"] = row["gmacs_fvcore"] - resize + official_resize
    row["modulation_gmacs_fvcore_official_resize"] = row["modulation_gmacs_fvcore"] - resize + official_resize
    row["uncounted_ops"] = _fmt_ops(Counter(table.attrs["uncounted_ops"]))
    return row


def _check(preset, norm, check, expected, measured, tolerance) -> dict:
    rel = abs(measured - expected) / abs(expected) if expected else abs(measured)
    return {"preset": preset, "norm": norm, "check": check, "expected": expected, "measured": measured,
            "rel_error": rel, "tolerance": tolerance, "ok": bool(rel <= tolerance)}


def _closed_form_checks(preset, norm, config, row) -> list[dict]:
    """Counted params / GMACs against the closed forms; for a norm without one, a single
    row saying the check was skipped and why (``ok`` is None: neither passed nor failed)."""
    if not has_closed_form(config):
        return [{"preset": preset, "norm": norm, "check": "closed form", "expected": None, "measured": None,
                 "rel_error": None, "tolerance": None, "ok": None,
                 "skipped": f"no closed form for the plugin norm {norm!r} ({norm_spec(norm).source})"}]
    closed = closed_form_generator_costs(config)
    return [_check(preset, norm, "params == closed form", closed["params"], row["params"], 0.0),
            _check(preset, norm, "gmacs_fvcore == closed form", closed["macs"] / 1e9, row["gmacs_fvcore"], 1e-12),
            _check(preset, norm, "gmacs_complete == closed form", closed["macs_complete"] / 1e9,
                   row["gmacs_complete"], 1e-12)]


def _reference_checks(preset, norm, row, reference: pd.DataFrame) -> list[dict]:
    ref = reference[(reference.preset == preset) & (reference.norm == norm)]
    if ref.empty:
        return []
    ref = ref.iloc[0]
    checks = [_check(preset, norm, "params == official", ref.params, row["params"], 0.0),
              _check(preset, norm, "modulation_params == official", ref.modulation_params,
                     row["modulation_params"], 0.0),
              _check(preset, norm, "gmacs_fvcore_official_resize ~ official GFLOPs", ref.gmacs_fvcore,
                     row["gmacs_fvcore_official_resize"], 1e-3)]
    # The official modulation GMACs have 3 decimals: allow half a unit of the last one.
    mod_tol = max(1e-3, 0.0005 / ref.modulation_gmacs_fvcore)
    checks.append(_check(preset, norm, "modulation_gmacs_fvcore_official_resize ~ official", ref.modulation_gmacs_fvcore,
                         row["modulation_gmacs_fvcore_official_resize"], mod_tol))
    return checks


def cost_tables(presets, norms, *, device="cpu", reference_dir=None, train_step: bool = True,
                **overrides) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(summary, per_layer, crosscheck)`` for every preset x norm, batch 1.

    ``summary`` has one row per generator: params, modulation params and share, GMACs
    (fvcore and complete) with their modulation part, ``modulation_overhead`` (see
    :data:`OVERHEAD_DEFINITION`), the fvcore totals with the official per-layer resize
    (comparable with the official tables), the discriminator (``d_params``, ``d_gmacs_*``)
    and, if ``train_step``, the counted matrix-op GMACs of a training iteration
    (:func:`training_step_gmacs`), and ``uncounted_ops`` (ops no handle counts).
    ``per_layer`` stacks the :func:`layer_costs` tables. ``crosscheck`` compares with
    closed-form arithmetic, FlopCounterMode and, when ``reference_dir`` holds the official
    numbers and no ``overrides`` are given, with those. Identical configs (e.g. ade20k and
    ade20k-outdoor) are traced once.
    """
    # The official numbers only apply to the official architectures (no overrides).
    use_reference = reference_dir is not None and not overrides
    reference = load_reference_costs(reference_dir) if use_reference else pd.DataFrame(columns=["preset", "norm"])
    done: dict = {}
    d_done: dict = {}
    rows, layers, checks = [], [], []
    for preset, norm in tqdm([(p, n) for p in presets for n in norms], desc="costs", unit="model"):
        config = generator_config(preset, norm, **overrides)
        if config not in done:
            log.info("tracing %s / %s generator (%dx%d)", preset, norm, *config.output_size)
            table = generator_costs(config, device=device)
            row = summarize_generator(table, config)
            meta_G = build_generator_from_config(config, "meta")
            args, kwargs = generator_inputs(config, device="meta")
            counter = flop_counter_crosscheck(table, meta_G, args, kwargs=kwargs)
            check_rows = _closed_form_checks(preset, norm, config, row) + [
                _check(preset, norm, "FlopCounterMode / 2 == fvcore conv+linear", counter["gmacs_fvcore_matrix_ops"],
                       counter["gmacs_flopcounter"], 1e-12),
                _check(preset, norm, "ops left uncounted by gmacs_complete", 0, sum(table.attrs["uncounted_ops"].values()), 0.0)]
            if train_step:
                steps = training_step_gmacs(config)
                row.update({f"{k}_gmacs_matrix": v for k, v in steps.items()})
                row["train_step_over_g_forward"] = steps["train_step"] / steps["g_forward"]
            done[config] = (row, table, check_rows)
        row, table, check_rows = done[config]
        d_key = (config.label_nc, config.contain_dontcare_label, config.no_instance, config.output_size)
        if d_key not in d_done:
            d_done[d_key] = discriminator_costs(config, device=device)
        d_table = d_done[d_key]
        rows.append({"preset": preset, "norm": norm, "output_size": "x".join(map(str, config.output_size)), **row,
                     "d_params": int(d_table.params.sum()), "d_gmacs_fvcore": float(d_table.gmacs_fvcore.sum()),
                     "d_gmacs_complete": float(d_table.gmacs_complete.sum())})
        layers.append(table.assign(preset=preset, norm=norm))
        checks += [{**c, "preset": preset} for c in check_rows]
        checks += _reference_checks(preset, norm, rows[-1], reference)
        d_ref = reference[(reference.preset == preset) & (reference.norm == "discriminator")]
        if norm == norms[0] and not d_ref.empty:
            checks.append(_check(preset, "discriminator", "params == official", d_ref.params.iloc[0], rows[-1]["d_params"], 0.0))
            checks.append(_check(preset, "discriminator", "gmacs_fvcore ~ official GFLOPs", d_ref.gmacs_fvcore.iloc[0],
                                 rows[-1]["d_gmacs_fvcore"], max(1e-3, 0.0005 / d_ref.gmacs_fvcore.iloc[0])))
    per_layer = pd.concat(layers, ignore_index=True)
    per_layer = per_layer[["preset", "norm"] + [c for c in per_layer.columns if c not in ("preset", "norm")]]
    return pd.DataFrame(rows), per_layer, pd.DataFrame(checks)


def cost_summary(presets, norms, **kwargs) -> pd.DataFrame:
    """The summary table of :func:`cost_tables` (one row per preset x norm)."""
    return cost_tables(presets, norms, **kwargs)[0]
