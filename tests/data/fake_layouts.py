"""Tiny datasets in each official directory layout, written with PIL into a temporary folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (40, 30)  # (width, height) of every generated image


def random_label(seed: int, values, size=SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.choice(np.asarray(values), size=(h // 5 + 1, w // 5 + 1))
    return coarse.repeat(5, 0).repeat(5, 1)[:h, :w]


def save_photo(path: Path, seed: int, size=SIZE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    pixels = np.random.default_rng(seed + 1000).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def save_map(path: Path, array: np.ndarray) -> Path:
    """Values < 256 as 8-bit mode L, wider ones as 16-bit PNGs (like Cityscapes instanceIds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.max() < 256 and array.min() >= 0:
        Image.fromarray(array.astype(np.uint8)).save(path)
    else:
        Image.fromarray(array.astype(np.uint16)).save(path)
    return path


def instances_of(label: np.ndarray) -> np.ndarray:
    """Instance ids: class * 1000 + block number (Cityscapes style for classes >= 24)."""
    h, w = label.shape
    blocks = (np.arange(h)[:, None] // 10) * 10 + np.arange(w)[None, :] // 20
    return label.astype(np.int64) * 1000 + blocks


def write_coco(root: Path, phase="train", n=3, values=(0, 5, 181, 255)) -> Path:
    for i in range(n):
        stem = f"0000{i:02d}"
        label = random_label(i, values)
        save_photo(root / f"{phase}_img" / f"{stem}.jpg", i)
        save_map(root / f"{phase}_label" / f"{stem}.png", label)
        save_map(root / f"{phase}_inst" / f"{stem}.png", (label % 7) * 30 + i)
    return root


def write_ade20k(root: Path, phase="train", n=3, values=(0, 1, 77, 150)) -> Path:
    split = {"train": "training", "val": "validation"}[phase]
    for i in range(n):
        stem = f"ADE_{phase}_{i + 1:08d}"
        save_photo(root / "ADEChallengeData2016" / "images" / split / f"{stem}.jpg", i)
        save_map(root / "ADEChallengeData2016" / "annotations" / split / f"{stem}.png", random_label(i, values))
    return root


def write_cityscapes(root: Path, phase="train", cities=("aachen", "bochum"), per_city=2,
                     values=(0, 7, 26, 33)) -> Path:
    for c, city in enumerate(cities):
        for j in range(per_city):
            i = c * per_city + j
            key = f"{city}_{i:06d}_000019"
            label = random_label(i, values)
            save_photo(root / "leftImg8bit" / phase / city / f"{key}_leftImg8bit.png", i)
            save_map(root / "gtFine" / phase / city / f"{key}_gtFine_labelIds.png", label)
            save_map(root / "gtFine" / phase / city / f"{key}_gtFine_instanceIds.png", instances_of(label))
            save_map(root / "gtFine" / phase / city / f"{key}_gtFine_color.png", label)  # ignored
    return root


def write_custom(root: Path, n=3, values=(0, 1, 2, 255), with_instances=True) -> Path:
    for i in range(n):
        label = random_label(i, values)
        save_photo(root / "images" / f"scene{i}.png", i)
        save_map(root / "labels" / f"scene{i}.png", label)
        if with_instances:
            save_map(root / "instances" / f"scene{i}.png", label + i)
    return root
