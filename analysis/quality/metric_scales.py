"""How each quality column is compared: direction, bounds, scale and equivalence margin, in one place.

    scale = metric_scale("fd_proxy_features")
    scale.lower_is_better, scale.bounds, scale.log     # True, (0, inf), True: compared as a log ratio
    scale.margin, scale.margin_text                    # log(1.25): ratios within 0.80-1.25 count as equal

The margins are fixed before any data is seen, so that "shown equivalent" / "shown no worse" means
the same in every run:

- Frechet distances (FID, proxy features) are skewed and scale with the feature space, so two
  models are compared by their ratio (a difference of logs); equal within 0.80-1.25, the
  bioequivalence convention.
- Shares in [0, 1] (mIoU, pixel accuracy): 0.05 absolute.
- The known-answer errors of the synthetic scenes (``analysis.quality.known_answer``): 0 for the
  law's expected image, 1 for an output constant inside every instance (shading) or for a grey
  image (base colour); the margin is a tenth of that gap.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

LOG_RATIO_MARGIN = math.log(1.25)


@dataclass(frozen=True)
class MetricScale:
    column: str
    lower_is_better: bool
    bounds: tuple[float, float]   # the values the metric can take
    log: bool                     # compared as a log ratio (True) or a difference
    margin: float                 # equivalence / non-inferiority margin on the compared scale
    margin_text: str              # the margin in words, for the report

    @property
    def scale_name(self) -> str:
        return "log ratio" if self.log else "difference"


def _frechet(column: str) -> MetricScale:
    return MetricScale(column, True, (0.0, math.inf), True, LOG_RATIO_MARGIN, "ratio within 0.80-1.25")


def _share(column: str) -> MetricScale:
    return MetricScale(column, False, (0.0, 1.0), False, 0.05, "0.05 absolute")


def _known_answer(column: str) -> MetricScale:
    return MetricScale(column, True, (0.0, math.inf), False, 0.10,
                       "0.1, a tenth of the gap between the law (0) and the trivial output (1)")


SCALES = {scale.column: scale for scale in (
    *map(_known_answer, ("shading_error", "base_colour_error")),
    *map(_frechet, ("fid", "fid_clean", "fd_proxy_features")),
    *map(_share, ("miou", "miou_proxy", "accuracy", "accuracy_proxy")))}
# Lower-is-better columns first, in the order tables and plots list them.
LOWER_IS_BETTER = tuple(c for c, s in SCALES.items() if s.lower_is_better)
HIGHER_IS_BETTER = tuple(c for c, s in SCALES.items() if not s.lower_is_better)
KNOWN_ANSWER = ("shading_error", "base_colour_error")
FRECHET = ("fid", "fid_clean", "fd_proxy_features")


def metric_scale(column: str) -> MetricScale:
    """The :class:`MetricScale` of a quality column; ValueError naming the known ones otherwise."""
    try:
        return SCALES[column]
    except KeyError:
        raise ValueError(f"no comparison scale for quality column {column!r}; known: {sorted(SCALES)}") from None
