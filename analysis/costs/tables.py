"""The cost tables of the report: one summary row per preset and norm, with the closed-form and
official cross-checks (:func:`cost_tables`).

    per_layer, summary, checks = cost_tables(["ade20k"], ["spade", "clade"])
"""
from __future__ import annotations

import logging
from collections import Counter

import pandas as pd
from tqdm.auto import tqdm

from models import build_generator_from_config
from models.presets import generator_config
from models.registry import norm_spec

from analysis.costs.checks import flop_counter_crosscheck, load_reference_costs, training_step_gmacs
from analysis.costs.formulas import closed_form_generator_costs, has_closed_form, official_resize_macs
from analysis.costs.layers import discriminator_costs, format_op_counts, generator_costs, generator_inputs, is_modulation

log = logging.getLogger(__name__)


OVERHEAD_DEFINITION = ("modulation_overhead = modulation GMACs / backbone GMACs, where modulation is "
                       "everything inside the norm_0/norm_1/norm_s layers and backbone is the rest of "
                       "the generator: the compute modulation adds on top of the backbone")


def _modulation(table: pd.DataFrame) -> pd.DataFrame:
    return table[table.role.map(is_modulation)]


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
    row["uncounted_ops"] = format_op_counts(Counter(table.attrs["uncounted_ops"]))
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

