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
import warnings
from collections import Counter
from math import prod

import pandas as pd
import torch
from torch import nn

# fvcore's import scripts its focal loss with torch.jit.script, which torch >= 2.9 deprecates
# with a FutureWarning on every run; nothing of ours uses that loss.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

from data.labels import make_semantic
from models import build_generator_from_config
from models.discriminator import MultiscaleDiscriminator
from models.init import init_official
from models.norms import CLADE, SPADE, ModulatedNorm
from models.presets import DiscriminatorConfig, label_config
from models.registry import norm_spec

from analysis.costs.formulas import closed_form_generator_costs, has_closed_form

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
_RESIZE_OPS = {"upsample_nearest2d", "argmax", "to"}
# Pure metadata / view ops: truly zero work. Every other op is either counted or reported.
_ZERO_COST_OPS = {f"aten::{name}" for name in (
    "Int", "ScalarImplicit", "size", "numel", "dim", "view", "reshape", "permute", "expand",
    "expand_as", "flatten", "squeeze", "unsqueeze", "select", "slice", "narrow", "t", "transpose",
    "detach", "chunk", "split", "split_with_sizes", "unbind", "alias", "empty", "new_empty",
    "dropout", "feature_dropout")}
MATRIX_OPS = ("conv", "linear", "addmm", "mm", "matmul", "bmm", "einsum")


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


# Roles of the parts of the built-in layers (a subclass keeps its parent's parts); the parts of any
# other layer (a plugin's) are "modulation_plugin". inst_conv is the toolkit's edge channel in any layer.
_PART_ROLES = ((SPADE, {"mlp_shared": "modulation_spade_shared", "mlp_gamma": "modulation_spade_gamma",
                        "mlp_beta": "modulation_spade_beta"}),
               (CLADE, {"class_specified_affine": "modulation_clade_affine"}))


def module_roles(model: nn.Module) -> dict[str, str]:
    """{module name: role} (see :data:`ROLES`) of every module of ``model``: a modulation layer
    (``models.ModulatedNorm``) is "modulation_apply", its parameter-free norm "modulation_norm",
    the parts its ``modulation_parts()`` names a modulation role (built-in parts their own, the
    rest "modulation_plugin"), its other children and everything outside the layers "backbone"."""
    roles = {name: "backbone" for name, _ in model.named_modules()}
    for name, layer in model.named_modules():
        if not isinstance(layer, ModulatedNorm):
            continue
        roles[name] = "modulation_apply"
        parts = set(layer.modulation_parts())
        for child, module in layer.named_children():
            role = _part_role(layer, child) if child in parts else (
                "modulation_norm" if child == "param_free_norm" else "backbone")
            for inner, _ in module.named_modules(prefix=f"{name}.{child}"):
                # CLADE-ICPE's dist convs inside the class tables
                roles[inner] = "modulation_icpe" if role == "modulation_clade_affine" and inner != f"{name}.{child}" \
                    else role
    return roles


def _part_role(layer: nn.Module, child: str) -> str:
    if child == "inst_conv":
        return "modulation_edge"
    for cls, parts in _PART_ROLES:
        if isinstance(layer, cls) and child in parts:
            return parts[child]
    return "modulation_plugin"


def op_role(role: str, op: str) -> str:
    """Role of one op run directly by a module of role ``role`` (refines :func:`module_roles`)."""
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


def format_op_counts(counter: Counter) -> str:
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

    roles = module_roles(model)
    rows = []
    for name, module in modules.items():
        by_role: dict[str, Counter] = {}
        for op, macs in own_ops[name].items():
            by_role.setdefault(op_role(roles[name], op), Counter())[op] += macs
        params = sum(p.numel() for p in module.parameters(recurse=False))
        if params or own_uncounted[name]:
            by_role.setdefault(roles[name], Counter())
        for role, ops in by_role.items():
            fvcore = sum(n for op, n in ops.items() if op not in _SKIPPED_OP_NAMES)
            rows.append({
                "module": name or "(root)", "type": type(module).__name__, "role": role,
                "stage": stages.get(name, "mixed") if name else "mixed",
                "params": params if role == roles[name] else 0,
                "gmacs_fvcore": fvcore / 1e9, "gmacs_complete": sum(ops.values()) / 1e9,
                "ops": ", ".join(sorted(ops)),
                "uncounted_ops": format_op_counts(own_uncounted[name]) if role == roles[name] else "",
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
