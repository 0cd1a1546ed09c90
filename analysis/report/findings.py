"""The report's Findings: one line per claim of the CLADE paper, computed from the run's tables.

    tables = {name: pd.read_csv(f"{run}/tables/{name}.csv") for name in TABLE_STAGES if exists}
    lines = findings(tables)                   # list[Finding]: claim, measured, uncertainty, verdict, source
    markdown = render_findings(lines)          # a table, then what each verdict means

Verdicts: ``supported`` / ``not supported`` only when the interval of the difference excludes
0 and the noise floor (``analysis.quality.stats.compare``), in the claim's favour or against it;
``within noise on this data`` otherwise (a "no worse" claim is then not contradicted); ``no verdict``
when the data cannot decide (one seed, unreliable timing); ``not measured`` when the table
behind the claim is missing; ``context`` for measured facts that test no claim.

Tables read (``tables/<name>.csv``; a missing table gives "not measured in this run (stage X
skipped)", a table missing columns names them). Existing tables, columns used:

- ``costs``: preset, norm, params, modulation_params, gmacs_fvcore, modulation_gmacs_fvcore.
- ``probe_resolutions``: norm, resolution, param, semantic_ratio, positional_ratio,
  semantic_ratio_q10, semantic_ratio_q90; ``model`` / ``spade_kernel_size`` tell models apart;
  several rows of one model, resolution and param are seeds (a ``seed`` column): intervals.
- ``probe_ablation``: kind, ablated, mean_abs_diff, norm (``no_position`` rows of CLADE-ICPE).

Tables the stages do not write yet, defined here:

- ``bench``: the existing columns plus ``p10_ms`` (10th percentile of the repeats),
  ``reliable`` (bool) and ``unreliable_reason`` (text, empty when reliable), from
  ``analysis.quality.stats.timing_reliability`` of the row's repeats and a reference kernel timed
  before and after the benchmark. Keys: preset, norm, batch, dtype, mode; median_ms, p90_ms.
- ``quality_seeds``: one row per (method, seed[, condition]): ``method`` (display label),
  ``norm``, ``seed``, ``steps`` (training steps actually run), ``images`` (evaluation images),
  the metric columns of ``analysis.report.roi`` (``fid``, ``fd_proxy_features``, ``miou_proxy``, ...),
  and for each metric ``<metric>_boot_low`` / ``<metric>_boot_high``: the percentile bootstrap
  interval over evaluation images of that seed's model (``analysis.quality.stats``, 200 resamples).
  Optional conditions: ``spade_kernel_size`` (1 or 3; rows without it count as 3) and
  ``mask_resolution`` (e.g. '256x256' for label maps at the output size, '64x64' for coarser
  masks upsampled): comparisons are made within each mask resolution. Rows with
  ``norm == 'real'`` score real images against real images: their Frechet distances are the
  noise floor of the Frechet columns.
- ``ablation_quality``: the class-mean ablation of each trained SPADE scored like the methods:
  ``model`` (method label), ``norm``, ``seed``, ``ablated`` ('none' for the unablated model,
  'all' for every layer, or a resolution stage 'HxW'), metric and ``_boot_`` columns as above.
- ``neighbourhood`` (``data.neighbourhood.single_class_fraction`` with a ``dataset`` column):
  dataset, resolution, kernel, single_class_fraction, images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.quality import stats
from analysis.report.roi import LOWER_IS_BETTER, plotted_quality_columns
from analysis.stages.registry import stage_writing

SUPPORTED, NOT_SUPPORTED, WITHIN_NOISE = "supported", "not supported", "within noise on this data"
NO_VERDICT, NOT_MEASURED, CONTEXT = "no verdict", "not measured", "context"
# The tables the claims read, each with the stage that writes it (the registry's), for "not measured in
# this run (stage X skipped)".
TABLE_STAGES = {name: stage_writing(name).name for name in ("costs", "bench", "probe_resolutions", "probe_ablation",
                                                            "neighbourhood", "quality_seeds", "ablation_quality")}
FRECHET_COLUMNS = ("fid", "fid_clean", "fd_proxy_features")


@dataclass(frozen=True)
class Finding:
    key: str           # claim family: cost, speed, semantic_share, neighbourhood, class_mean, ...
    claim: str
    measured: str
    uncertainty: str
    verdict: str
    source: str        # relative link: tables/<name>.csv
    value: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")


def _num(value: float) -> str:
    return f"{value:.4g}" if np.isfinite(value) else "n/a"


def _table(tables: dict, name: str, columns, key: str, claim: str) -> pd.DataFrame | Finding:
    """The table, or a 'not measured' Finding naming the skipped stage or the missing columns."""
    table = tables.get(name)
    if table is None:
        return Finding(key, claim, f"not measured in this run (stage {TABLE_STAGES[name]} skipped)", "",
                       NOT_MEASURED, "")
    missing = [c for c in columns if c not in table]
    if missing:
        return Finding(key, claim, f"tables/{name}.csv lacks columns {missing} (written by an older "
                       f"version of stage {TABLE_STAGES[name]})", "", NOT_MEASURED, f"tables/{name}.csv")
    return table


# ----------------------------------------------------------------------------------------
# Costs and speed

def cost_findings(tables: dict) -> list[Finding]:
    """Modulation params and MACs of SPADE vs CLADE, per preset (counted: exact)."""
    claim = "CLADE's modulation costs far fewer params and MACs than SPADE's"
    table = _table(tables, "costs", ("preset", "norm", "params", "modulation_params", "gmacs_fvcore",
                                     "modulation_gmacs_fvcore"), "cost", claim)
    if isinstance(table, Finding):
        return [table]
    out = []
    for preset, rows in table.groupby("preset", sort=False):
        by = rows.set_index("norm")
        if not {"spade", "clade"} <= set(by.index):
            continue
        s, c = by.loc["spade"], by.loc["clade"]
        share = lambda r, k: 100 * r[f"modulation_{k}"] / r[k]
        measured = (f"modulation params SPADE {s.modulation_params / 1e6:.2f} M ({share(s, 'params'):.1f} % of G) vs "
                    f"CLADE {c.modulation_params / 1e6:.2f} M ({share(c, 'params'):.1f} %); modulation GMACs "
                    f"(fvcore) SPADE {_num(s.modulation_gmacs_fvcore)} ({share(s, 'gmacs_fvcore'):.1f} % of G) vs "
                    f"CLADE {_num(c.modulation_gmacs_fvcore)} ({share(c, 'gmacs_fvcore'):.2g} %)")
        cheaper = c.modulation_params < s.modulation_params and c.modulation_gmacs_fvcore < s.modulation_gmacs_fvcore
        ratio = s.modulation_gmacs_fvcore / c.modulation_gmacs_fvcore if c.modulation_gmacs_fvcore else np.inf
        out.append(Finding("cost", f"{claim} ({preset})", measured, "exact (counted; see cost_crosscheck.csv)",
                           SUPPORTED if cheaper else NOT_SUPPORTED, "tables/costs.csv", float(ratio)))
    return out


def speed_findings(tables: dict) -> list[Finding]:
    """SPADE / CLADE latency ratio with its run-to-run band; no verdict from unreliable timing."""
    claim = "CLADE runs faster than SPADE"
    keys = ["preset", "batch", "dtype", "mode"]
    table = _table(tables, "bench", (*keys, "norm", "median_ms", "p90_ms"), "speed", claim)
    if isinstance(table, Finding):
        return [table]
    missing = [c for c in ("p10_ms", "reliable", "unreliable_reason") if c not in table]
    out = []
    for key, rows in table.groupby(keys, sort=False):
        by = rows.set_index("norm")
        if not {"spade", "clade"} <= set(by.index):
            continue
        s, c = by.loc["spade"], by.loc["clade"]
        speedup = s.median_ms / c.median_ms
        where = f"{key[0]}, batch {key[1]}, {key[2]}, {key[3]}"
        measured = f"SPADE / CLADE median latency = {speedup:.2f}x ({s.median_ms:.4g} vs {c.median_ms:.4g} ms)"
        if missing:
            out.append(Finding("speed", f"{claim} ({where})", measured,
                               f"timing reliability not recorded (bench.csv lacks {missing})", NO_VERDICT,
                               "tables/bench.csv", float(speedup)))
            continue
        low, high = s.p10_ms / c.p90_ms, s.p90_ms / c.p10_ms
        uncertainty = f"run-to-run band {low:.2f}x - {high:.2f}x (SPADE p10..p90 over CLADE p90..p10)"
        # a missing flag (NaN) is not a reliable measurement
        reasons = [f"{n}: {r.unreliable_reason if pd.notna(r.unreliable_reason) else 'reliability unknown'}"
                   for n, r in (("SPADE", s), ("CLADE", c)) if pd.isna(r.reliable) or not bool(r.reliable)]
        if reasons:
            verdict, uncertainty = NO_VERDICT, f"unreliable timing, {'; '.join(reasons)}"
        else:
            verdict = SUPPORTED if low > 1 else NOT_SUPPORTED if high < 1 else WITHIN_NOISE
        out.append(Finding("speed", f"{claim} ({where})", measured, uncertainty, verdict, "tables/bench.csv",
                           float(speedup), float(low), float(high)))
    return out


# ----------------------------------------------------------------------------------------
# Probe: how semantic SPADE's modulation is

# Fewer pixels per image than this (the 1x1 head layer): the positional regression has nothing to
# fit within a class component, so the semantic / positional split is left undecided.
MIN_PROBE_PIXELS = 4


def semantic_share_findings(tables: dict) -> list[Finding]:
    """Per resolution: SPADE's gamma/beta variance explained by the class vs by position."""
    claim = "SPADE's gamma/beta vary more with the class than with position"
    table = _table(tables, "probe_resolutions", ("norm", "resolution", "param", "semantic_ratio",
                                                 "positional_ratio"), "semantic_share", claim)
    if isinstance(table, Finding):
        return [table]
    spade = table[table.norm == "spade"]
    if spade.empty:
        return [Finding("semantic_share", claim, "not measured in this run (no SPADE model probed)", "",
                        NOT_MEASURED, "tables/probe_resolutions.csv")]
    # several seeds of one training run share its ``run`` (one row per seed: an interval)
    models = [c for c in ("run" if "run" in spade else "model", "spade_kernel_size") if c in spade]
    out = []
    for key, rows in spade.groupby([*models, "resolution"], sort=False, dropna=False):
        key = dict(zip([*models, "resolution"], key))
        name = key.get("run", key.get("model"))
        label = key["resolution"] + (f"; {name}" if name is not None else "") + (
            f", {int(key['spade_kernel_size'])}x{int(key['spade_kernel_size'])} kernel"
            if pd.notna(key.get("spade_kernel_size", np.nan)) else "")
        parts, verdicts, notes, spreads = [], [], [], []
        height, width = (int(v) for v in str(key["resolution"]).split("x"))
        if height * width < MIN_PROBE_PIXELS:
            out.append(Finding("semantic_share", f"{claim} ({label})", "not decided at this resolution",
                               f"{height * width} pixel(s) per image: position within a class component is not "
                               f"measurable", NO_VERDICT, "tables/probe_resolutions.csv",
                               float(rows.semantic_ratio.mean())))
            continue
        for param, group in rows.groupby("param", sort=False):
            # The chance-adjusted share (as adjusted R^2): at the head layers a class has a few pixels
            # per image, and the raw regression on position fits them by chance (1x1: one pixel).
            column = "positional_ratio_adjusted" if "positional_ratio_adjusted" in group else "positional_ratio"
            semantic, positional = group.semantic_ratio.to_numpy(float), group[column].to_numpy(float)
            defined = np.isfinite(semantic) & np.isfinite(positional)   # NaN: no variance at all there
            if not defined.any():
                parts.append(f"{param}: no variance (ratios undefined)")
                notes.append(f"{param}: zero variance at this resolution")
                verdicts.append(NO_VERDICT)
                continue
            semantic, positional = semantic[defined], positional[defined]
            if len(semantic) >= 2:                # one row per seed
                result = stats.compare(semantic, positional, paired=True)
                verdicts.append({"higher": SUPPORTED, "lower": NOT_SUPPORTED}.get(result.verdict, WITHIN_NOISE))
                difference = result.difference.text("{:.2f}")
                notes.append(f"{param} semantic - positional {difference} over {len(semantic)} seeds")
            else:
                verdicts.append(NO_VERDICT)       # as stats.compare: one seed has no interval
                if "semantic_ratio_q10" in group:
                    q10, q90 = group.semantic_ratio_q10.iloc[0], group.semantic_ratio_q90.iloc[0]
                    spreads.append(f"{param} {q10:.2f}-{q90:.2f}")
            adjusted = " (chance-adjusted)" if column == "positional_ratio_adjusted" else ""
            parts.append(f"{param} semantic {semantic.mean():.2f} vs positional{adjusted} {positional.mean():.2f}")
        if len(notes) < len(parts):
            spread = f"; semantic share of channels, q10-q90: {', '.join(spreads)}" if spreads else ""
            notes.append(f"1 seed: no interval over seeds (probe every seed's SPADE){spread}")
        verdict = verdicts[0] if len(set(verdicts)) == 1 else NO_VERDICT if NO_VERDICT in verdicts else WITHIN_NOISE
        out.append(Finding("semantic_share", f"{claim} ({label})", "; ".join(parts), "; ".join(notes), verdict,
                           "tables/probe_resolutions.csv", float(rows.semantic_ratio.mean())))
    return out


def neighbourhood_findings(tables: dict) -> list[Finding]:
    """Context: share of pixels whose 3x3 window holds one class, per resolution."""
    claim = "pixels whose 3x3 neighbourhood holds one class (SPADE's 3x3 conv sees one class there)"
    table = _table(tables, "neighbourhood", ("resolution", "kernel", "single_class_fraction"), "neighbourhood", claim)
    if isinstance(table, Finding):
        return [table]
    table = table if "dataset" in table else table.assign(dataset="this run's data")
    out = []
    for (dataset, kernel), rows in table.groupby(["dataset", "kernel"], sort=False):
        measured = ", ".join(f"{r.resolution}: {r.single_class_fraction:.3f}" for r in rows.itertuples())
        images = f" over {int(rows.images.iloc[0])} label maps" if "images" in rows else ""
        out.append(Finding("neighbourhood", f"{dataset}: {claim.replace('3x3', f'{kernel}x{kernel}')}", measured,
                           f"exact count{images}", CONTEXT, "tables/neighbourhood.csv"))
    return out


# ----------------------------------------------------------------------------------------
# Quality: seeds, bootstrap over images, noise floor

def noise_floors(tables: dict) -> dict[str, float]:
    """Real-vs-real Frechet distance per Frechet column (``quality_seeds`` rows with norm 'real')."""
    table = tables.get("quality_seeds")
    if table is None or "norm" not in table:
        return {}
    real = table[table.norm == "real"]
    return {c: float(real[c].mean()) for c in FRECHET_COLUMNS if c in real and real[c].notna().any()}


def _boot_text(label: str, rows: pd.DataFrame, metric: str) -> str:
    low, high = f"{metric}_boot_low", f"{metric}_boot_high"
    if low not in rows or rows[low].isna().all():
        return f"{label}: no image bootstrap"
    return f"{label} [{_num(rows[low].mean())}, {_num(rows[high].mean())}]"


def _quality_line(key: str, claim: str, a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str], metric: str,
                  floor: float, source: str, *, paired: bool = False) -> Finding:
    """Compare ``a`` with ``b`` (per-seed rows) on ``metric``: supported when ``a`` is measurably
    better, not supported when measurably worse, within noise on a tie (``stats.compare``)."""
    if paired:
        merged = a[["seed", metric]].merge(b[["seed", metric]], on="seed", suffixes=("_a", "_b")).dropna()
        x, y = merged[f"{metric}_a"].to_numpy(float), merged[f"{metric}_b"].to_numpy(float)
    else:
        x, y = a[metric].dropna().to_numpy(float), b[metric].dropna().to_numpy(float)
    claim = f"{claim} [{metric}]"
    if len(x) == 0 or len(y) == 0:
        return Finding(key, claim, f"no {metric} values for {names[0] if len(x) == 0 else names[1]}", "",
                       NOT_MEASURED, source)
    result = stats.compare(x, y, noise_floor=floor, paired=paired)
    lower_better = metric in LOWER_IS_BETTER
    better = {"lower": lower_better, "higher": not lower_better}.get(result.verdict)
    d = result.difference
    measured = (f"{names[0]} {_num(x.mean())} vs {names[1]} {_num(y.mean())} "
                f"({'lower' if lower_better else 'higher'} is better); difference {_num(d.estimate)}")
    seeds = (f"difference {d.text()} ({d.method}, n={d.n})" if d.has_interval
             else f"{d.note} (n={d.n})")
    parts = [seeds, f"images: {_boot_text(names[0], a, metric)}, {_boot_text(names[1], b, metric)}"]
    if floor:
        parts.append(f"noise floor {_num(floor)} (real vs real)")
    if "steps" in a and "steps" in b and set(a.steps.dropna()) != set(b.steps.dropna()):
        parts.append(f"unequal training: {names[0]} {sorted(set(a.steps.dropna().astype(int)))} steps, "
                     f"{names[1]} {sorted(set(b.steps.dropna().astype(int)))}")
    verdict = (NO_VERDICT if result.verdict == "undetermined" else
               {True: SUPPORTED, False: NOT_SUPPORTED, None: WITHIN_NOISE}[better])
    return Finding(key, claim, measured, "; ".join(parts), verdict, source, d.estimate, d.low, d.high)


def quality_findings(tables: dict) -> list[Finding]:
    """CLADE vs SPADE, 1x1 vs 3x3 SPADE and what ICPE adds, per metric (and mask resolution)."""
    claims = {"clade_vs_spade": "CLADE's quality is no worse than SPADE's", "kernel": "a 1x1 SPADE (purely semantic) "
              "is no worse than the 3x3 SPADE", "icpe": "CLADE-ICPE improves on CLADE"}
    table = _table(tables, "quality_seeds", ("method", "norm", "seed"), "clade_vs_spade", claims["clade_vs_spade"])
    if isinstance(table, Finding):
        return [Finding(k, c, table.measured, "", NOT_MEASURED, table.source) for k, c in claims.items()]
    floors, source = noise_floors(tables), "tables/quality_seeds.csv"
    kernel = table.spade_kernel_size.fillna(3) if "spade_kernel_size" in table else pd.Series(3, index=table.index)
    conditions = table.mask_resolution if "mask_resolution" in table else pd.Series("", index=table.index)
    out = []   # the real-vs-real rows belong to no mask resolution
    present = list(conditions[table.norm != "real"].dropna().drop_duplicates())
    for condition in present:
        here = conditions == condition
        suffix = f" (masks {condition})" if condition else ""
        pick = lambda norm, k=3: table[here & (table.norm == norm) & ((kernel == k) | (norm != "spade"))]
        pairs = [("clade_vs_spade", pick("clade"), pick("spade"), ("CLADE", "SPADE")),
                 ("icpe", pick("clade-icpe"), pick("clade"), ("CLADE-ICPE", "CLADE"))]
        pairs.insert(1, ("kernel", pick("spade", 1), pick("spade"), ("SPADE 1x1", "SPADE 3x3")))
        for key, a, b, names in pairs:
            if a.empty or b.empty:
                if condition != present[0]:    # the mask experiment covers SPADE and CLADE only
                    continue
                absent = names[0] if a.empty else names[1]
                out.append(Finding(key, claims[key] + suffix, f"not measured in this run (no {absent} rows)", "",
                                   NOT_MEASURED, source))
                continue
            out += [_quality_line(key, claims[key] + suffix, a, b, names, m, floors.get(m, 0.0), source)
                    for m in plotted_quality_columns(table)]
    return out


def class_mean_findings(tables: dict) -> list[Finding]:
    """Quality lost when SPADE's gamma/beta are replaced by their class means (paired by seed)."""
    claim = "replacing SPADE's gamma/beta by their class means loses no quality"
    table = _table(tables, "ablation_quality", ("model", "seed", "ablated"), "class_mean", claim)
    if isinstance(table, Finding):
        return [table]
    floors, source, out = noise_floors(tables), "tables/ablation_quality.csv", []
    for model, rows in table.groupby("model", sort=False):
        full = rows[rows.ablated == "none"]
        for ablated in [a for a in rows.ablated.drop_duplicates() if a != "none"]:
            where = "all layers" if ablated == "all" else f"layers at {ablated}"
            out += [_quality_line("class_mean", f"{claim} ({model}, {where})", rows[rows.ablated == ablated], full,
                                  ("class means", "as trained"), m, floors.get(m, 0.0), source, paired=True)
                    for m in plotted_quality_columns(rows)]
    return out


def icpe_context(tables: dict) -> list[Finding]:
    """What removing CLADE-ICPE's positional input changes in its output (probe), and its cost."""
    out = []
    probe = tables.get("probe_ablation")
    if probe is not None and {"kind", "ablated", "mean_abs_diff"} <= set(probe.columns):
        rows = probe[(probe.kind == "no_position") & (probe.ablated == "all")]
        if not rows.empty:
            out.append(Finding("icpe", "output change when CLADE-ICPE's positional input is removed",
                               f"mean |change| {_num(rows.mean_abs_diff.iloc[0])} (images in [-1, 1])",
                               "exact on the probed images", CONTEXT, "tables/probe_ablation.csv",
                               float(rows.mean_abs_diff.iloc[0])))
    costs = tables.get("costs")
    if costs is not None and {"clade", "clade-icpe"} <= set(costs.norm):
        by = costs.set_index(["preset", "norm"])
        parts = [f"{p}: +{int(by.loc[(p, 'clade-icpe'), 'params'] - by.loc[(p, 'clade'), 'params'])} params"
                 for p in costs.preset.drop_duplicates() if (p, "clade-icpe") in by.index and (p, "clade") in by.index]
        out.append(Finding("icpe", "what ICPE costs over CLADE", ", ".join(parts), "exact (counted)", CONTEXT,
                           "tables/costs.csv"))
    return out


def findings(tables: dict[str, pd.DataFrame]) -> list[Finding]:
    """Every claim's Finding, in report order, from the run's tables (keys as :data:`TABLE_STAGES`)."""
    return (cost_findings(tables) + speed_findings(tables) + semantic_share_findings(tables)
            + neighbourhood_findings(tables) + class_mean_findings(tables) + quality_findings(tables)
            + icpe_context(tables))


def render_findings(lines: list[Finding]) -> str:
    """Markdown: one table row per finding (claim, measured, uncertainty, verdict, link), then the legend."""
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    out = ["| claim | measured | uncertainty | verdict | source |", "| --- | --- | --- | --- | --- |"]
    for f in lines:
        link = f"[{f.source.rsplit('/', 1)[-1]}]({f.source})" if f.source else ""
        out.append(f"| {cell(f.claim)} | {cell(f.measured)} | {cell(f.uncertainty)} | **{f.verdict}** | {link} |")
    out += ["", "Verdicts: *supported* / *not supported*: the 95 % interval over seeds of the difference "
            "excludes 0 and the difference exceeds the noise floor (real vs real), in the claim's favour or "
            "against it; *within noise on this data*: it does not (for 'no worse' and 'loses no quality' "
            "claims: no difference measurable, which does not contradict them); *no verdict*: the data cannot decide (one seed, unreliable "
            "timing); *not measured*: the stage behind it did not run; *context*: a measured fact, no claim."]
    return "\n".join(out) + "\n"
