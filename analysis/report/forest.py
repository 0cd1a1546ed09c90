"""Forest plot of the Findings' comparisons: every effect with its interval, in units of its margin.

    fig = forest_plot(decided_comparisons)     # analysis.report.claims.decide(...)

Metrics differ in scale (a log ratio of Frechet distances, a difference of mIoU or of the
known-answer error), so each effect is drawn divided by its own equivalence margin and
oriented so that right means "the first side is better": the shaded band [-1, 1] is "equal
within the margin", and a "no worse" claim holds where the interval's left end stays right of
-1. Headline tests (Holm-corrected) are drawn solid, secondary ones hollow.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.report.claims import CLAIMS, CONTRADICTED, NOT_CONVERGED, Comparison
from analysis.quality import stats

VERDICT_COLORS = {stats.SHOWN_EQUIVALENT: "#2ca02c", stats.SHOWN_NO_WORSE: "#2ca02c", stats.SHOWN_BETTER: "#2ca02c",
                  CONTRADICTED: "#d62728", NOT_CONVERGED: "0.6"}
OTHER_COLOR = "#1f77b4"      # not shown, no verdict


def in_margins(row: Comparison) -> tuple[float, float, float]:
    """(estimate, low, high) of ``row``'s difference in units of its margin, right = first side better."""
    interval = row.difference.interval()
    sign = -1.0 if row.scale.lower_is_better else 1.0
    ends = sorted(sign * v / row.scale.margin for v in (interval.low, interval.high))
    return sign * interval.estimate / row.scale.margin, ends[0], ends[1]


def forest_plot(rows: list[Comparison]):
    """One line per comparison (headline tests first), its interval in units of its margin."""
    ordered = sorted(rows, key=lambda r: not r.primary)
    fig, ax = plt.subplots(figsize=(8.5, 0.28 * len(ordered) + 1.6))
    ax.axvspan(-1, 1, color="0.92", zorder=0, label="within the margin")
    ax.axvline(0, color="0.4", lw=0.8, zorder=1)
    names = []
    for y, row in enumerate(ordered):
        estimate, low, high = in_margins(row)
        color = VERDICT_COLORS.get(row.verdict, OTHER_COLOR)
        if np.isfinite(low) and np.isfinite(high):
            ax.plot([low, high], [y, y], color=color, lw=2 if row.primary else 1.2, zorder=2)
        ax.scatter([estimate], [y], color=color if row.primary else "white", edgecolor=color, s=36, zorder=3)
        where = f", {row.condition}" if row.condition else ""
        names.append(f"{row.a} vs {row.b}{where} [{row.metric}]: {row.verdict}")
    ax.set_yticks(range(len(ordered)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("effect / margin (right: first side better; shaded: equal within the margin)", fontsize=8)
    finite = [abs(v) for r in ordered for v in in_margins(r) if np.isfinite(v)]
    limit = max([1.5, *finite]) * 1.1
    ax.set_xlim(-limit, limit)
    if limit > 20:
        ax.set_xscale("symlog", linthresh=1)
    claims = ", ".join(dict.fromkeys(CLAIMS[r.claim].key for r in ordered))
    ax.set_title(f"Every comparison of the Findings ({claims}); 95 % intervals; solid: headline "
                 f"(Holm), hollow: secondary", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
