"""The report's Findings: one row per claim of the CLADE paper, read in 30 seconds, from the run's tables.

    tables = {name: pd.read_csv(f"{run}/tables/{name}.csv") for name in TABLE_STAGES if exists}
    lines = findings(tables)                   # list[Finding]: claim, verdict, headline effect, caveat, source
    markdown = render_findings(lines)          # the table, then what each verdict means
    every = appendix(tables)                   # every comparison behind them (tables/findings.csv)

One row per claim: costs, speed, how semantic SPADE's modulation is, the class-mean ablation,
CLADE vs SPADE quality, what ICPE adds, coarse input masks, and SPADE-to-CLADE conversion (what
the toolkit adds). Each row gives its verdict, one headline effect with its interval and n, and
its main caveat. Quality verdicts come from ``analysis.report.claims`` (the claim's own test:
equivalence, non-inferiority or superiority against a stated margin; Holm over the headline
tests; "not converged" unless both sides converged by ``tables/convergence.csv``); the semantic
share from ``tables/probe_verdicts.csv`` (per layer, against the untrained generator). Costs
are counted (exact); speed is decided only from reliable timings.

Tables read (``tables/<name>.csv``; a missing table gives "not measured in this run (stage X
skipped)", a table missing columns names them):

- ``costs``: preset, norm, params, modulation_params, gmacs_fvcore, modulation_gmacs_fvcore.
- ``bench``: preset, batch, dtype, mode, norm, median_ms, p10_ms, p90_ms, reliable, unreliable_reason.
- ``probe_verdicts``: model, layer, resolution, share_class (+ _low, _high), share_class_untrained,
  negligible, verdict ("supported", "not supported", "no verdict: ...").
- ``quality_seeds``: one row per trained model: run (identity: ``clade``, ``spade-to-clade``, ...),
  method (label), seed, mask_resolution, quality columns and their ``_boot_low`` / ``_boot_high``
  over images; the ``real`` row's Frechet distances are the metric's floor at that image count.
- ``ablation_quality``: run, seed, ablated ('none', 'all' or a resolution 'HxW'), quality columns.
- ``convergence``: method, metric, converged, ... (the train stage).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.quality import stats
from analysis.quality.metric_scales import FRECHET
from analysis.report import claims as C
from analysis.stages.registry import stage_writing

SUPPORTED, NOT_SUPPORTED, MIXED, NOT_SHOWN = "supported", "not supported", "mixed", stats.NOT_SHOWN
NO_VERDICT, NOT_MEASURED = "no verdict", "not measured"
# The tables the claims read, each with the stage that writes it (the registry's), for "not measured in
# this run (stage X skipped)".
TABLE_STAGES = {name: stage_writing(name).name for name in ("costs", "bench", "probe_verdicts", "quality_seeds",
                                                            "ablation_quality", "convergence")}
QUALITY_CLAIMS = tuple(key for key, claim in C.CLAIMS.items() if claim.headline)


@dataclass(frozen=True)
class Finding:
    key: str           # claim: cost, speed, semantic_share, class_mean, clade_vs_spade, icpe, ...
    claim: str
    verdict: str
    effect: str        # the headline effect with its interval and n
    caveat: str
    source: str        # relative link: tables/<name>.csv
    value: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")


def _table(tables: dict, name: str, columns, key: str, claim: str) -> pd.DataFrame | Finding:
    """The table, or a 'not measured' Finding naming the skipped stage or the missing columns."""
    table = tables.get(name)
    if table is None:
        return Finding(key, claim, NOT_MEASURED, f"not measured in this run (no tables/{name}.csv: stage "
                       f"{TABLE_STAGES[name]} skipped or older)", "", "")
    missing = [c for c in columns if c not in table]
    if missing:
        return Finding(key, claim, NOT_MEASURED, f"tables/{name}.csv lacks columns {missing} (written by an older "
                       f"version of stage {TABLE_STAGES[name]})", "", f"tables/{name}.csv")
    return table


# ----------------------------------------------------------------------------------------
# Costs and speed

def cost_finding(tables: dict) -> Finding:
    """SPADE / CLADE modulation GMACs per configuration (counted: exact); identical presets merge."""
    claim = "CLADE's modulation costs far fewer params and MACs than SPADE's"
    columns = ("preset", "norm", "params", "modulation_params", "gmacs_fvcore", "modulation_gmacs_fvcore")
    table = _table(tables, "costs", columns, "cost", claim)
    if isinstance(table, Finding):
        return table
    groups, cheaper = {}, []
    for preset, rows in table.groupby("preset", sort=False):
        by = rows.set_index("norm")
        if not {"spade", "clade"} <= set(by.index):
            continue
        s, c = by.loc["spade"], by.loc["clade"]
        numbers = tuple(float(v) for r in (s, c) for v in (r.modulation_params, r.modulation_gmacs_fvcore))
        groups.setdefault(numbers, []).append(preset)     # ade20k and ade20k-outdoor count alike
        cheaper.append(c.modulation_params < s.modulation_params and c.modulation_gmacs_fvcore < s.modulation_gmacs_fvcore)
    if not groups:
        return Finding("cost", claim, NOT_MEASURED, "no preset with both SPADE and CLADE counted", "", "tables/costs.csv")
    parts, ratios = [], []
    for (sp, sg, cp, cg), presets in groups.items():
        ratios.append(sg / cg if cg else np.inf)
        parts.append(f"{' / '.join(presets)} {sg / cg:,.0f}x GMACs, {sp / cp:.1f}x params")
    return Finding("cost", claim, SUPPORTED if all(cheaper) else NOT_SUPPORTED,
                   "SPADE / CLADE modulation: " + "; ".join(parts), "counted with fvcore (exact), not timed",
                   "tables/costs.csv", float(min(ratios)), float(min(ratios)), float(max(ratios)))


def speed_finding(tables: dict) -> Finding:
    """SPADE / CLADE latency ratio with its run-to-run band, from the first configuration timed
    reliably (else the first one, with no verdict)."""
    claim = "CLADE runs faster than SPADE"
    keys = ["preset", "batch", "dtype", "mode"]
    table = _table(tables, "bench", (*keys, "norm", "median_ms", "p10_ms", "p90_ms", "reliable"), "speed", claim)
    if isinstance(table, Finding):
        return table
    candidates = []
    for key, rows in table.groupby(keys, sort=False):
        by = rows.set_index("norm")
        if {"spade", "clade"} <= set(by.index):
            s, c = by.loc["spade"], by.loc["clade"]
            # a missing flag (NaN) is not a reliable measurement
            unreliable = [f"{n}: {r.get('unreliable_reason') if pd.notna(r.get('unreliable_reason')) else 'reliability unknown'}"
                          for n, r in (("SPADE", s), ("CLADE", c)) if pd.isna(r.reliable) or not bool(r.reliable)]
            candidates.append((key, s, c, unreliable))
    if not candidates:
        return Finding("speed", claim, NOT_MEASURED, "no configuration with both SPADE and CLADE timed", "",
                       "tables/bench.csv")
    key, s, c, unreliable = next((x for x in candidates if not x[3]), candidates[0])
    speedup, low, high = s.median_ms / c.median_ms, s.p10_ms / c.p90_ms, s.p90_ms / c.p10_ms
    where = f"{key[0]}, batch {key[1]}, {key[2]}, {key[3]}"
    effect = (f"SPADE / CLADE median latency {speedup:.2f}x [run-to-run band {low:.2f}x-{high:.2f}x] "
              f"({s.median_ms:.4g} vs {c.median_ms:.4g} ms; {where})")
    if unreliable:
        return Finding("speed", claim, NO_VERDICT, effect, "unreliable timing: " + "; ".join(unreliable),
                       "tables/bench.csv", float(speedup), float(low), float(high))
    verdict = SUPPORTED if low > 1 else NOT_SUPPORTED if high < 1 else NOT_SHOWN
    others = len(candidates) - 1
    caveat = f"this machine ({where}); {others} other configuration(s) in bench.csv" if others else f"this machine ({where})"
    return Finding("speed", claim, verdict, effect, caveat, "tables/bench.csv", float(speedup), float(low), float(high))


# ----------------------------------------------------------------------------------------
# Probe: how semantic SPADE's modulation is

def semantic_share_finding(tables: dict) -> Finding:
    """The probe's per-layer verdicts (class share against all other variance, above the untrained
    generator's) of the full-mask SPADE, its finest judged layer as the headline."""
    claim = "SPADE's gamma/beta are mostly semantic, not spatially adaptive (especially for high-resolution masks)"
    table = _table(tables, "probe_verdicts", ("model", "layer", "resolution", "share_class", "share_class_low",
                                              "share_class_high", "share_class_untrained", "verdict"),
                   "semantic_share", claim)
    if isinstance(table, Finding):
        return table
    source = "tables/probe_verdicts.csv"
    summaries = {model: _probe_summary(rows) for model, rows in table.groupby("model", sort=False)}
    if "spade" not in summaries:
        return Finding("semantic_share", claim, NOT_MEASURED, "the probe has no rows of the SPADE run", "", source)
    verdict, effect, judged = summaries["spade"]
    others = [f"{model}: {v} ({n})" for model, (v, _, n) in summaries.items() if model != "spade"]
    caveat = f"per layer vs the untrained twin; {judged}" + (f"; {'; '.join(others)}" if others else "")
    flags = C.converged_runs(tables.get("convergence"))
    if flags is not None and not flags.get("spade", False):   # a trained run that is still learning
        return Finding("semantic_share", claim, C.NOT_CONVERGED, effect, f"not converged: spade; {caveat}", source)
    return Finding("semantic_share", claim, verdict, effect, caveat, source)


def _probe_summary(rows: pd.DataFrame) -> tuple[str, str, str]:
    """(verdict, headline effect, 'k of n layers judged') of one probed model."""
    judged = rows[rows.verdict.isin([SUPPORTED, NOT_SUPPORTED])]
    count = f"{(judged.verdict == SUPPORTED).sum()} of {len(judged)} judged layers supported, {len(rows) - len(judged)} without verdict"
    if judged.empty:
        reasons = ", ".join(sorted(set(rows.verdict)))
        return NO_VERDICT, f"no layer judged ({reasons})", count
    verdict = (SUPPORTED if (judged.verdict == SUPPORTED).all() else
               NOT_SUPPORTED if (judged.verdict == NOT_SUPPORTED).all() else MIXED)
    pixels = judged.resolution.map(lambda r: np.prod([int(v) for v in str(r).split("x")]))
    finest = judged.loc[pixels.idxmax()]
    effect = (f"class share {finest.share_class:.2f} [{finest.share_class_low:.2f}, {finest.share_class_high:.2f}] vs "
              f"untrained {finest.share_class_untrained:.2f} at {finest.layer} ({finest.resolution})")
    return verdict, effect, count


# ----------------------------------------------------------------------------------------
# Quality claims

def decided_comparisons(tables: dict) -> list[C.Comparison]:
    """Every quality comparison of the run with its verdict (``analysis.report.claims``)."""
    seeds = tables.get("quality_seeds")
    labels = (dict(zip(seeds.run, seeds.method)) if seeds is not None and {"run", "method"} <= set(seeds.columns)
              else None)
    return C.decide(C.quality_comparisons(tables), tables.get("convergence"), labels=labels)


def floors(tables: dict) -> dict[str, float]:
    """Real-vs-real Frechet distance per Frechet column (the ``real`` row of ``quality_seeds``): the
    metric's floor at this image count, reported beside the distances, never a threshold."""
    table = tables.get("quality_seeds")
    if table is None or "norm" not in table:
        return {}
    real = table[table.norm == "real"]
    return {c: float(real[c].mean()) for c in FRECHET if c in real and real[c].notna().any()}


def quality_findings(tables: dict) -> list[Finding]:
    """One Finding per quality claim: its headline comparison, or why there is none."""
    rows = decided_comparisons(tables)
    floor = floors(tables)
    out = []
    for key in QUALITY_CLAIMS:
        claim = C.CLAIMS[key]
        source = "tables/ablation_quality.csv" if key == "class_mean" else "tables/quality_seeds.csv"
        headline = next((r for r in rows if r.claim == key and r.primary), None)
        if headline is None:
            table = "ablation_quality" if key == "class_mean" else "quality_seeds"
            why = (f"not measured in this run (no tables/{table}.csv: stage {TABLE_STAGES[table]} skipped or older)"
                   if table not in tables
                   else "not measured in this run (the runs it compares are absent)")
            out.append(Finding(key, claim.text, NOT_MEASURED, why, "", source))
            continue
        caveats = [headline.note] if headline.note else []
        caveats.append(f"{claim.test} test, margin {headline.scale.margin_text}")
        if headline.metric in floor:
            caveats.append(f"real-vs-real floor {floor[headline.metric]:.3g}")
        if "proxy" in headline.metric:
            caveats.append("proxy metric")
        caveats.append(claim.caveat)
        where = f" ({headline.condition})" if headline.condition else ""
        estimate, low, high = headline.effect()
        out.append(Finding(key, claim.text + where, headline.verdict, headline.effect_text(), "; ".join(caveats),
                           source, estimate, low, high))
    return out


def findings(tables: dict[str, pd.DataFrame]) -> list[Finding]:
    """Every claim's Finding, in report order, from the run's tables (keys as :data:`TABLE_STAGES`)."""
    return [cost_finding(tables), speed_finding(tables), semantic_share_finding(tables), *quality_findings(tables)]


def appendix(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every quality comparison behind the Findings, one row each (``tables/findings.csv``), with
    the Frechet floor of its metric where there is one."""
    table = C.comparisons_table(decided_comparisons(tables))
    floor = floors(tables)
    if not table.empty:
        table["floor_real_vs_real"] = table.metric.map(floor)
    return table


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_findings(lines: list[Finding]) -> str:
    """Markdown: one table row per claim (claim, verdict, headline effect, caveat, link), then the legend."""
    out = ["| claim | verdict | headline effect [95 % interval] | main caveat | source |",
           "| --- | --- | --- | --- | --- |"]
    for f in lines:
        link = f"[{f.source.rsplit('/', 1)[-1]}]({f.source})" if f.source else ""
        out.append(f"| {_cell(f.claim)} | **{f.verdict}** | {_cell(f.effect)} | {_cell(f.caveat)} | {link} |")
    out += ["", "Verdicts. Quality claims are tested as they are worded: *shown equivalent* (two one-sided tests), "
            "*shown no worse* (non-inferiority) or *shown better* (superiority) at 5 % against the stated margin, "
            "Holm-corrected over the quality claims; *contradicted*: the opposite (worse by more than the margin) "
            "is shown; *not shown*: the data decide neither way, which is no support; *not converged*: a side "
            "had not converged by the train stage's rule, so no verdict is drawn; *no verdict*: one seed or "
            "unreliable timing. Intervals combine the seeds' spread with the images' (bootstrap); Frechet "
            "distances compare as ratios. Probe: *supported* where a layer's class share lies above the "
            "untrained generator's; *mixed*: some layers only. Every comparison: the appendix and "
            "[findings.csv](tables/findings.csv)."]
    return "\n".join(out) + "\n"


def render_appendix(table: pd.DataFrame) -> str:
    """Markdown of every comparison (headline tests first): sides, n, effect, interval, p, verdict."""
    if table.empty:
        return "No quality comparison in this run.\n"
    out = ["| claim | condition | metric | a vs b (n) | effect [95 %] | margin | p (Holm) | verdict |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in table.sort_values("headline", ascending=False, kind="stable").itertuples():
        interval = f" [{r.ci_low:.3g}, {r.ci_high:.3g}]" if np.isfinite(r.ci_low) else ""
        holm = (f"{r.p_holm:.3g}" if np.isfinite(r.p_holm) else "not in the family: " + r.verdict if r.headline
                else "secondary")
        p = f"{r.p:.3g} ({holm})"
        out.append(f"| {_cell(r.key)} | {_cell(r.condition)} | {r.metric} | {_cell(r.a)} vs {_cell(r.b)} "
                   f"({r.n_a} vs {r.n_b}) | {r.effect} = {r.estimate:.3g}{interval} | {_cell(r.margin)} | {p} | "
                   f"{r.verdict} |")
    return "\n".join(out) + "\n"
