"""Every quality comparison the Findings rest on, tested as its claim says, gated by convergence.

    rows = quality_comparisons(tables)        # list[Comparison]: one per claim, side pair, metric, condition
    rows = decide(rows, tables.get("convergence"))   # verdicts: Holm over the headline tests
    table = comparisons_table(rows)            # tables/findings.csv

Sides are chosen by run identity (the ``run`` column the eval stage writes: ``spade``, ``clade``,
``clade-icpe``, ``spade-1x1``, ``<norm>-mask<f>``, ``spade-to-clade[-ft]``), never by norm: a
converted or fine-tuned CLADE has norm ``clade`` but is not the CLADE method.

Each claim names its test (``analysis.quality.stats``): "equivalent" (TOST), "no worse"
(non-inferiority) or "better" (superiority), against the metric's margin
(``analysis.quality.metric_scales``), on its scale (log ratio for Frechet distances). Method
comparisons are unpaired and add each side's image-bootstrap error to the seeds' spread; the
class-mean ablation is paired by seed (one model measured two ways on the same images).

Verdicts: a comparison between sides that have not both converged (``tables/convergence.csv``:
every row of the run says ``converged``; no table: none has) is "not converged" and leaves the
family. The headline test of each claim (its primary metric: the known-answer shading error
when present, else the Frechet distance) is decided with Holm's correction over the headline
tests; the other rows are secondary and shown unadjusted. "contradicted": the opposite test
(worse by more than the margin; for "better" claims: worse at all) passes the same correction.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from analysis.quality import stats
from analysis.quality.metric_scales import SCALES, metric_scale

EQUIVALENT, NO_WORSE, BETTER = "equivalent", "no worse", "better"
SHOWN = {EQUIVALENT: stats.SHOWN_EQUIVALENT, NO_WORSE: stats.SHOWN_NO_WORSE, BETTER: stats.SHOWN_BETTER}
CONTRADICTED, NOT_CONVERGED, UNDECIDED = "contradicted", "not converged", "no verdict (1 seed)"
# The metric a claim's headline test uses, the first present: the known answer where the data has
# one, else the distribution distance (else the first metric measured); the others are secondary.
PRIMARY_METRICS = ("shading_error", "fid", "fd_proxy_features")
# Models made from another run without (or with little) training of their own: their convergence is
# their source's.
CONVERTED_FROM = {"spade-to-clade": "spade", "spade-to-clade-ft": "spade"}
MASK_RUN = re.compile(r"^(spade|clade)-mask(\d+)$")


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    test: str                 # EQUIVALENT / NO_WORSE / BETTER
    caveat: str
    headline: bool = True     # a Findings row (its primary test joins the Holm family); else appendix only


CLAIMS = {c.key: c for c in (
    Claim("class_mean", "Replacing SPADE's gamma/beta by their class means loses no quality", EQUIVALENT,
          "paired by seed on the same images; a tiny generator at the run's budget"),
    Claim("clade_vs_spade", "CLADE's quality is no worse than SPADE's", NO_WORSE,
          "synthetic scenes, tiny generators; the proxy metrics are no FID"),
    Claim("icpe", "CLADE-ICPE (positional encoding) improves on CLADE", BETTER,
          "spatial adaptivity measured by the scenes' known shading"),
    Claim("mask_resolution", "With coarse input masks CLADE is still no worse than SPADE", NO_WORSE,
          "one coarsening factor; label maps nearest-upsampled"),
    Claim("conversion", "SPADE converted to CLADE keeps SPADE's quality", NO_WORSE,
          "conversion of the seed-0 SPADE only"),
    Claim("kernel", "A 1x1 SPADE (purely semantic) is no worse than the 3x3 SPADE", NO_WORSE,
          "secondary: not a claim of the paper", headline=False),
)}


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` on one metric, as one claim tests it."""
    claim: str                # Claim.key
    condition: str            # e.g. "masks 32x32", "all layers"
    metric: str
    a: str                    # side labels
    b: str
    runs: tuple[str, str]     # run identities of the sides (for the convergence check)
    a_mean: float
    b_mean: float
    difference: stats.Difference
    p_claim: float            # the claim's test, unadjusted
    p_against: float          # the opposite test, unadjusted
    primary: bool = False     # the claim's headline test
    p_claim_holm: float = float("nan")
    p_against_holm: float = float("nan")
    verdict: str = ""
    note: str = ""
    images: int | None = None  # evaluation images behind each seed's value

    @property
    def scale(self):
        return metric_scale(self.metric)

    def effect(self, level: float = stats.LEVEL) -> tuple[float, float, float]:
        """(estimate, low, high) as reported: a ratio a / b for log-ratio metrics, else a - b."""
        interval = self.difference.interval(level)
        values = (interval.estimate, interval.low, interval.high)
        return tuple(float(np.exp(v)) for v in values) if self.scale.log else values

    def effect_text(self) -> str:
        estimate, low, high = self.effect()
        what = f"{self.a} / {self.b}" if self.scale.log else f"{self.a} - {self.b}"
        interval = f" [{low:.3g}, {high:.3g}]" if np.isfinite(low) else " (1 seed: no interval)"
        images = f" x {self.images} images" if self.images else ""
        return (f"{self.metric} {what} = {estimate:.3g}{interval} ({self.a_mean:.3g} vs {self.b_mean:.3g}; "
                f"n = {self.difference.n_a} vs {self.difference.n_b} seeds{images})")


def _image_se(rows: pd.DataFrame, metric: str, log: bool) -> float:
    """One side's standard error over the evaluation images, from its seeds' bootstrap intervals
    (half width / z; log scale: of the logs, or relative to the value when a bound is <= 0)."""
    low, high = f"{metric}_boot_low", f"{metric}_boot_high"
    if low not in rows or high not in rows:
        return 0.0
    ok = rows[[metric, low, high]].dropna()
    if ok.empty:
        return 0.0
    z = 2 * scipy_stats.norm.ppf((1 + stats.LEVEL) / 2)
    lo, hi, value = (ok[c].to_numpy(float) for c in (low, high, metric))
    if log:
        positive = (lo > 0) & (value > 0)
        width = np.where(positive, np.log(np.where(positive, hi, 1) / np.where(positive, lo, 1)),
                         (hi - lo) / np.where(value > 0, value, np.inf))
    else:
        width = hi - lo
    return float(np.sqrt(np.mean((width / z) ** 2)))


def compare(claim: str, condition: str, metric: str, a: pd.DataFrame, b: pd.DataFrame, labels: tuple[str, str],
            runs: tuple[str, str], *, paired: bool = False) -> Comparison | None:
    """The :class:`Comparison` of the per-seed rows ``a`` and ``b`` on ``metric`` (None when a side has
    no value). ``paired``: matched by ``seed``, no image term (the same images, the same model)."""
    scale, test = metric_scale(metric), CLAIMS[claim].test
    if paired:
        merged = a[["seed", metric]].merge(b[["seed", metric]], on="seed", suffixes=("_a", "_b")).dropna()
        x, y = merged[f"{metric}_a"].to_numpy(float), merged[f"{metric}_b"].to_numpy(float)
        image_se = (0.0, 0.0)
    else:
        x, y = a[metric].dropna().to_numpy(float), b[metric].dropna().to_numpy(float)
        image_se = (_image_se(a, metric, scale.log), _image_se(b, metric, scale.log))
    if not len(x) or not len(y):
        return None
    if scale.log and ((x <= 0).any() or (y <= 0).any()):
        x, y = np.maximum(x, 1e-12), np.maximum(y, 1e-12)   # a distance of exactly 0: as good as it gets
    d = stats.difference(x, y, paired=paired, log=scale.log, image_se=image_se)
    lower = scale.lower_is_better
    if test == EQUIVALENT:
        p_claim = stats.p_equivalent(d, scale.margin)
        p_against = stats.p_worse_beyond(d, scale.margin, lower_is_better=lower)   # loses more than the margin
    elif test == NO_WORSE:
        p_claim = stats.p_no_worse(d, scale.margin, lower_is_better=lower)
        p_against = stats.p_worse_beyond(d, scale.margin, lower_is_better=lower)
    else:
        p_claim = stats.p_better(d, lower_is_better=lower)
        p_against = stats.p_worse_beyond(d, 0.0, lower_is_better=lower)
    images = int(a["images"].max()) if "images" in a and a["images"].notna().any() else None
    return Comparison(claim, condition, metric, *labels, runs, float(x.mean()), float(y.mean()), d, p_claim, p_against,
                      images=images)


def _metrics(table: pd.DataFrame) -> list[str]:
    return [m for m in SCALES if m in table and pd.to_numeric(table[m], errors="coerce").notna().any()]


def _run_column(table: pd.DataFrame) -> pd.Series:
    """The run identity of each row (``run``; tables written before it had none: ``norm``)."""
    return table["run"] if "run" in table else table["norm"]


def quality_comparisons(tables: dict) -> list[Comparison]:
    """Every comparison of the quality claims that the run's ``quality_seeds`` and ``ablation_quality``
    tables allow, each metric present, primary ones marked (one per claim)."""
    out = []
    seeds = tables.get("quality_seeds")
    if seeds is not None and {"seed"} <= set(seeds.columns):
        run = _run_column(seeds)
        masks = seeds.mask_resolution if "mask_resolution" in seeds else pd.Series("", index=seeds.index)
        full = masks[run == "spade"].iloc[0] if (run == "spade").any() else ""
        side = lambda name: seeds[run == name]
        label = lambda name: seeds.loc[run == name, "method"].iloc[0] if "method" in seeds and (run == name).any() \
            else name
        pairs = [("clade_vs_spade", "clade", "spade"), ("icpe", "clade-icpe", "clade"), ("kernel", "spade-1x1", "spade"),
                 ("conversion", "spade-to-clade", "spade"), ("conversion", "spade-to-clade-ft", "spade")]
        coarse = sorted({MASK_RUN.match(r)[2] for r in run.dropna().unique() if MASK_RUN.match(r)}, key=int)
        pairs += [("mask_resolution", f"clade-mask{f}", f"spade-mask{f}") for f in coarse]
        for claim, a, b in pairs:
            if side(a).empty or side(b).empty:
                continue
            condition = f"masks {masks[run == a].iloc[0]}" if claim == "mask_resolution" else (
                f"masks {full}" if full else "")
            for metric in _metrics(seeds):
                found = compare(claim, condition, metric, side(a), side(b), (label(a), label(b)), (a, b))
                out += [found] if found is not None else []
    ablation = tables.get("ablation_quality")
    if ablation is not None and {"seed", "ablated"} <= set(ablation.columns):
        run = ablation["run"] if "run" in ablation else pd.Series("spade", index=ablation.index)
        for name in run.drop_duplicates():
            rows = ablation[run == name]
            full = rows[rows.ablated == "none"]
            for ablated in [v for v in rows.ablated.drop_duplicates() if v != "none"]:
                condition = "all layers" if ablated == "all" else f"layers at {ablated}"
                for metric in _metrics(rows):
                    found = compare("class_mean", condition, metric, rows[rows.ablated == ablated], full,
                                    ("class means", "as trained"), (name, name), paired=True)
                    out += [found] if found is not None else []
    return mark_primary(out)


def mark_primary(rows: list[Comparison]) -> list[Comparison]:
    """Mark each Findings claim's headline test: its first side pair and condition ('all layers' for the
    ablation), on the first metric of :data:`PRIMARY_METRICS` it has (else its first metric)."""
    out, chosen = list(rows), set()
    for claim in [c for c in dict.fromkeys(r.claim for r in rows) if CLAIMS[c].headline]:
        mine = [i for i, r in enumerate(rows) if r.claim == claim]
        first = rows[mine[0]]
        condition = "all layers" if claim == "class_mean" else first.condition
        candidates = [i for i in mine if rows[i].runs == first.runs and rows[i].condition == condition]
        ranked = [i for metric in PRIMARY_METRICS for i in candidates if rows[i].metric == metric] + candidates
        if ranked:
            chosen.add(ranked[0])
    return [replace(r, primary=i in chosen) for i, r in enumerate(out)]


def converged_runs(convergence: pd.DataFrame | None) -> dict[str, bool] | None:
    """{run or method label: converged} from ``tables/convergence.csv`` (every row of it must say
    converged); None without the table."""
    if convergence is None:
        return None
    if not {"method", "converged"} <= set(convergence.columns):
        raise ValueError(f"tables/convergence.csv: columns {list(convergence.columns)}; expected at least "
                         f"'method' and 'converged'")
    flags = convergence.converged.map(lambda v: str(v).strip().lower() in ("true", "1", "yes"))
    return flags.groupby(convergence.method.astype(str)).all().to_dict()


def _converged(run: str, flags: dict | None) -> bool:
    if flags is None:
        return False
    return bool(flags.get(CONVERTED_FROM.get(run, run), False))


def decide(rows: list[Comparison], convergence: pd.DataFrame | None, *, alpha: float = stats.ALPHA,
           labels: dict | None = None) -> list[Comparison]:
    """Verdicts: not converged / no verdict / shown / contradicted / not shown (module docstring).
    ``labels``: {run: method label} so that a convergence table keyed by label is understood too."""
    flags = converged_runs(convergence)
    if flags is not None and labels:
        flags = {**{run: flags[label] for run, label in labels.items() if label in flags}, **flags}
    gated = []
    for r in rows:
        missing = [run for run in dict.fromkeys(r.runs) if not _converged(run, flags)]
        note = ("no tables/convergence.csv (train stage not run or older)" if flags is None
                else f"not converged: {', '.join(missing)}" if missing else "")
        gated.append(replace(r, note=note))
    family = [i for i, r in enumerate(gated) if r.primary and not r.note and r.difference.decidable]
    claim_holm = stats.holm([gated[i].p_claim for i in family])
    against_holm = stats.holm([gated[i].p_against for i in family])
    adjusted = {i: (c, a) for i, c, a in zip(family, claim_holm, against_holm)}
    out = []
    for i, r in enumerate(gated):
        p_claim, p_against = adjusted.get(i, (r.p_claim, r.p_against))
        if r.note:
            verdict = NOT_CONVERGED
        elif not r.difference.decidable:
            verdict = UNDECIDED
        elif p_claim <= alpha:
            verdict = SHOWN[CLAIMS[r.claim].test]
        elif p_against <= alpha:
            verdict = CONTRADICTED
        else:
            verdict = stats.NOT_SHOWN
        out.append(replace(r, p_claim_holm=p_claim if i in adjusted else np.nan,
                           p_against_holm=p_against if i in adjusted else np.nan, verdict=verdict))
    return out


def comparisons_table(rows: list[Comparison]) -> pd.DataFrame:
    """One row per comparison (``tables/findings.csv``): sides, n, test, scale, margin, effect with
    its 95 % interval, p-values (Holm for the headline tests) and the verdict."""
    records = []
    for r in rows:
        estimate, low, high = r.effect()
        records.append({
            "claim": CLAIMS[r.claim].text, "key": r.claim, "condition": r.condition, "metric": r.metric,
            "headline": r.primary, "a": r.a, "b": r.b, "n_a": r.difference.n_a, "n_b": r.difference.n_b,
            "images": r.images, "a_mean": r.a_mean, "b_mean": r.b_mean, "test": CLAIMS[r.claim].test, "scale": r.difference.scale,
            "effect": "a / b" if r.scale.log else "a - b", "estimate": estimate, "ci_low": low,
            "ci_high": high, "margin": r.scale.margin_text, "p": r.p_claim, "p_holm": r.p_claim_holm,
            "p_opposite": r.p_against, "p_opposite_holm": r.p_against_holm, "verdict": r.verdict,
            "method": r.difference.method, "note": r.note})
    return pd.DataFrame(records)
