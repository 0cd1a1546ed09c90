"""Benchmark: our ICPE (official mode) against a straightforward per-component implementation.

    python -m analysis.speed.icpe_bench --dataroot ../shared/data/coco_stuff_sample --repeats 3 --out reports/icpe

Times both on every label PNG under ``<dataroot>/*_label/`` in the same run, checks that the
outputs are identical (``norm`` and ``no`` variants), and prints the median seconds per image,
the speed ratio and the largest absolute difference. With ``--out`` it writes
``icpe_bench.csv`` (one row per image) and ``meta.json`` (summary and provenance).
Timings are wall-clock, single-threaded numpy; on a shared machine they are noisy.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from data.icpe import EPS, icpe_map
from fileio import atomic_path, provenance, write_json_atomic

DEFAULT_DATAROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_stuff_sample"


def _components(mask: np.ndarray, labeller: str):
    """8-connected components of a boolean mask: (count, component map, [(row, col)] centroids)."""
    if labeller == "cv2":
        import cv2  # optional dependency, imported only when this labeller is chosen
        count, components, _, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8) * 255,
                                                                           connectivity=8)
        return count - 1, components, [(c[1], c[0]) for c in centroids[1:]]
    components, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    centres = ndimage.center_of_mass(mask, components, range(1, count + 1))
    return count, components, centres


def default_labeller() -> str:
    """"cv2" (what the official code uses) when OpenCV is installed, else "scipy"."""
    return "cv2" if importlib.util.find_spec("cv2") is not None else "scipy"


def official_icpe_reference(label, normalize: bool = True, labeller: str | None = None) -> np.ndarray:
    """The official algorithm written plainly: one pass per class and a full-image pass per component.

    Used only as the speed and correctness baseline of ``icpe_map(mode="official")``.
    """
    label = np.asarray(label)
    labeller = labeller or default_labeller()
    h, w = label.shape
    rows = np.repeat(np.arange(h)[:, None], w, 1)
    cols = np.repeat(np.arange(w)[None, :], h, 0)
    out = np.zeros((2, h, w), dtype=np.float32)
    for value in np.unique(label):
        if value == 0:  # the official code never encodes raw label 0
            continue
        count, components, centres = _components(label == value, labeller)
        for number in range(1, count + 1):
            inside = (components == number).astype(np.float32)
            for channel, grid, centre in ((0, rows, centres[number - 1][0]), (1, cols, centres[number - 1][1])):
                offset = (grid - centre) * inside
                if normalize:
                    offset = offset / np.max(np.abs(offset) + EPS)
                out[channel] += offset
    return out


def _median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_benchmark(dataroot: Path, repeats: int = 3, labeller: str | None = None) -> pd.DataFrame:
    """One row per label PNG: size, components, seconds of each implementation, max |difference|."""
    paths = sorted(Path(dataroot).glob("*_label/*.png"))
    if not paths:
        raise FileNotFoundError(f"no label PNGs found in {dataroot}/*_label/; expected the COCO-Stuff "
                                f"layout (train_label/, val_label/); pass --dataroot")
    labeller = labeller or default_labeller()
    rows = []
    for path in paths:
        label = np.asarray(Image.open(path))
        diffs = {}
        for normalize, tag in ((True, "norm"), (False, "no")):
            ours = icpe_map(label, mode="official", normalize=normalize)
            reference = official_icpe_reference(label, normalize, labeller)
            diffs[tag] = float(np.abs(ours - reference).max())
        fast = _median_seconds(lambda: icpe_map(label, mode="official"), repeats)
        naive = _median_seconds(lambda: official_icpe_reference(label, True, labeller), repeats)
        components = sum(_components(label == v, labeller)[0] for v in np.unique(label) if v != 0)
        rows.append(dict(image=f"{path.parent.name}/{path.name}", height=label.shape[0], width=label.shape[1],
                         components=components, fast_s=fast, reference_s=naive, ratio=naive / fast,
                         max_abs_diff_norm=diffs["norm"], max_abs_diff_no=diffs["no"]))
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame) -> dict:
    """Medians over images, the ratio of medians, and the worst differences."""
    fast, naive = float(table.fast_s.median()), float(table.reference_s.median())
    return dict(images=len(table), fast_median_s=fast, reference_median_s=naive,
                ratio_of_medians=naive / fast, median_ratio=float(table.ratio.median()),
                max_abs_diff_norm=float(table.max_abs_diff_norm.max()),
                max_abs_diff_no=float(table.max_abs_diff_no.max()))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--dataroot", type=Path, default=DEFAULT_DATAROOT,
                        help="COCO-Stuff folder with *_label/*.png")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per image and implementation")
    parser.add_argument("--labeller", choices=("cv2", "scipy"), default=None,
                        help="connected components of the reference (default: cv2 if installed)")
    parser.add_argument("--out", type=Path, default=None, help="folder for icpe_bench.csv and meta.json")
    args = parser.parse_args(argv)
    labeller = args.labeller or default_labeller()
    table = run_benchmark(args.dataroot, args.repeats, labeller)
    summary = summarize(table)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nmedian s/image: ours {summary['fast_median_s']:.5f}, reference ({labeller}) "
          f"{summary['reference_median_s']:.4f}; ratio of medians {summary['ratio_of_medians']:.0f}x; "
          f"max |diff| norm {summary['max_abs_diff_norm']:.3g}, no {summary['max_abs_diff_no']:.3g}")
    if args.out is not None:
        with atomic_path(args.out / "icpe_bench.csv") as tmp:
            table.to_csv(tmp, index=False)
        write_json_atomic(args.out / "meta.json",
                          provenance(summary=summary, dataroot=str(args.dataroot), repeats=args.repeats,
                                     labeller=labeller,
                                     note="wall-clock on a possibly shared machine; compare ratios"))
    return summary


if __name__ == "__main__":
    main()
