"""Which files form a sample in each dataset layout, found and checked without decoding a pixel.

    problems = []                      # (path, exception) of every file left out
    samples = layout_samples("ade20k", Path("datasets/ADEChallengeData2016"), "train", False, problems)

Files pair by a key: Cityscapes by the first three '_' fields of the name, the other layouts by
stem. Images and maps may have any of ``IMAGE_EXTENSIONS``; two files of one kind with the same
key (``a.jpg`` and ``a.png``) are refused naming both, since either could be the intended one.
Label and instance maps in a lossy format (``data.image_io.check_map_file``) are refused here,
when the dataset is indexed, so no run starts on them. The caller raises the first problem or,
with ``skip_invalid``, leaves those samples out.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from data.image_io import SKIP_HINT, check_map_file

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class SamplePaths:
    """Files of one sample."""

    image: Path
    label: Path
    instance: Path | None = None


def natural_key(text: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder {path} does not exist; expected it in the dataset "
                                f"layout (see data/datasets.py) or pass the right dataroot")
    return path


def _index(files, key, what: str, problems: list) -> dict[str, Path | None]:
    """Files by sample key; a key with two files maps to None (each extra file is a problem)."""
    found: dict[str, Path | None] = {}
    first: dict[str, Path] = {}
    for path in sorted(files, key=lambda p: natural_key(str(p))):
        k = key(path)
        if k in first:
            problems.append((path, ValueError(f"two {what} files for sample {k!r}: {first[k]} and {path}; "
                                              f"expected one (remove the wrong one, {SKIP_HINT})")))
            found[k] = None
        else:
            first[k] = found[k] = path
    return found


def _pair(images: dict, labels: dict, instances: dict | None, where: dict, problems: list) -> list[SamplePaths]:
    """Samples whose files all exist once and whose maps are lossless; every other file is a problem."""
    samples = []
    for k in sorted(set(images) | set(labels), key=natural_key):
        if any(files is not None and k in files and files[k] is None for files in (images, labels, instances)):
            continue  # two files of one kind: already reported, neither is guessed
        if k not in labels:
            problems.append((images[k], FileNotFoundError(
                f"image {images[k]} has no label: expected a label file for {k!r} in {where['label']} "
                f"({SKIP_HINT})")))
        elif k not in images:
            problems.append((labels[k], FileNotFoundError(
                f"label {labels[k]} has no image: expected an image file for {k!r} in {where['image']} "
                f"({SKIP_HINT})")))
        elif instances is not None and k not in instances:
            problems.append((labels[k], FileNotFoundError(
                f"label {labels[k]} has no instance map: expected an instance file for {k!r} in "
                f"{where['instance']} ({SKIP_HINT})")))
        else:
            sample = SamplePaths(images[k], labels[k], instances[k] if instances is not None else None)
            try:
                check_map_file(sample.label, "label")
                if sample.instance is not None:
                    check_map_file(sample.instance, "instance map")
            except ValueError as error:
                problems.append((sample.image, error))
                continue
            samples.append(sample)
    return samples


def _images_in(folder: Path, recursive: bool = False, stem_suffix: str = "") -> list[Path]:
    """Files with an image extension in ``folder`` whose stem ends with ``stem_suffix``."""
    pattern = "**/*" if recursive else "*"
    return [p for p in folder.glob(pattern)
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.stem.endswith(stem_suffix) and p.is_file()]


def _cityscapes(root: Path, phase: str, use_instance: bool, problems: list) -> list[SamplePaths]:
    label_dir = need_dir(root / "gtFine" / phase, "Cityscapes label")
    image_dir = need_dir(root / "leftImg8bit" / phase, "Cityscapes image")
    key = lambda p: "_".join(p.name.split("_")[:3])  # noqa: E731
    images = _index(_images_in(image_dir, True, "_leftImg8bit"), key, "image", problems)
    labels = _index(_images_in(label_dir, True, "_gtFine_labelIds"), key, "label", problems)
    instances = (_index(_images_in(label_dir, True, "_gtFine_instanceIds"), key, "instance", problems)
                 if use_instance else None)
    where = {"image": image_dir, "label": label_dir, "instance": label_dir}
    return _pair(images, labels, instances, where, problems)


def _ade20k(root: Path, phase: str, use_instance: bool, problems: list) -> list[SamplePaths]:
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    split = {"train": "training", "val": "validation"}[phase]
    image_dir = need_dir(root / "images" / split, "ADE20K image")
    label_dir = need_dir(root / "annotations" / split, "ADE20K annotation")
    return stem_samples([image_dir], [label_dir], None, problems)


def stem_samples(image_dirs, label_dirs, instance_dirs, problems: list) -> list[SamplePaths]:
    """Samples of files paired by stem across the given folders (instances only with ``instance_dirs``)."""
    stem = lambda p: p.stem  # noqa: E731
    images = _index([p for d in image_dirs for p in _images_in(d)], stem, "image", problems)
    labels = _index([p for d in label_dirs for p in _images_in(d)], stem, "label", problems)
    instances = (_index([p for d in instance_dirs for p in _images_in(d)], stem, "instance", problems)
                 if instance_dirs else None)
    where = {"image": ", ".join(map(str, image_dirs)), "label": ", ".join(map(str, label_dirs)),
             "instance": ", ".join(map(str, instance_dirs or []))}
    return _pair(images, labels, instances, where, problems)


def _coco(root: Path, phase: str, use_instance: bool, problems: list) -> list[SamplePaths]:
    kinds = ("img", "label", "inst") if use_instance else ("img", "label")
    dirs = {k: [need_dir(root / f"{phase}_{k}", f"COCO-Stuff {phase}_{k}")] for k in kinds}
    if phase == "train":  # the official loader adds portrait folders in training when present
        for k in kinds:
            dirs[k] += [p for p in [root / f"{phase}_{k}_portrait"] if p.is_dir()]
    return stem_samples(dirs["img"], dirs["label"], dirs.get("inst"), problems)


LAYOUTS = {"cityscapes": _cityscapes, "ade20k": _ade20k, "coco": _coco}


def layout_samples(layout: str, root: Path, phase: str, use_instance: bool, problems: list) -> list[SamplePaths]:
    """Samples of an official ``layout`` (a key of LAYOUTS) under ``root``, naturally sorted."""
    return LAYOUTS[layout](root, phase, use_instance, problems)


def custom_dirs(dataroot, phase, image_dir, label_dir, instance_dir) -> tuple[Path, Path, Path | None]:
    """(image, label, instance or None) folders of the custom layout."""
    if image_dir is None or label_dir is None:
        if dataroot is None:
            raise ValueError("preset 'custom' needs dataroot (with images/ and labels/) or "
                             "image_dir= and label_dir=")
        root = Path(dataroot)
        root = root / phase if (root / phase / "images").is_dir() else root
        image_dir = image_dir or root / "images"
        label_dir = label_dir or root / "labels"
        if instance_dir is None and (root / "instances").is_dir():
            instance_dir = root / "instances"
    return Path(image_dir), Path(label_dir), Path(instance_dir) if instance_dir is not None else None


def custom_has_instances(dataroot, phase: str = "train") -> bool:
    """Whether a custom dataset under ``dataroot`` has instance maps (``instances/``); without
    them the generator config needs ``no_instance=True`` (no all-zero edge channel)."""
    return custom_dirs(dataroot, phase, None, None, None)[2] is not None
