"""Readers for Cityscapes, ADE20K, COCO-Stuff and custom folders, with the official preprocessing.

    ds = build_dataset("coco-stuff", "datasets/cocostuff", "train", with_dist=True)
    ds.scan()                  # check every file now (the trainer calls it before step 1)
    ds.set_epoch(epoch)        # new crops / flips per epoch, identical in every worker
    batch = next(iter(DataLoader(ds, batch_size=8, num_workers=2)))

Each item is the official input dict: ``label`` LongTensor [1, H, W] (dontcare mapped to
label_nc), ``instance`` LongTensor [1, H, W] (zeros without instance maps), ``image``
FloatTensor [3, H, W] in [-1, 1], ``dist`` FloatTensor [2, H, W] (ICPE; zeros unless
``with_dist``), ``path`` (the image file).

Layouts (``dataroot`` is the folder shown at the top; ``phase`` is "train" or "val"):

- cityscapes: ``leftImg8bit/<phase>/<city>/*_leftImg8bit.png``,
  ``gtFine/<phase>/<city>/*_gtFine_labelIds.png`` and ``*_gtFine_instanceIds.png``; files pair
  by their first three '_' fields (``<city>_<seq>_<frame>``).
- ade20k, ade20k-outdoor: ``images/{training,validation}/*.jpg`` (or .png, ...) and
  ``annotations/{training,validation}/*.png``, paired by stem (dataroot may also be the folder holding
  ``ADEChallengeData2016/``). The official postprocess meant to turn raw 0 'unlabeled' into
  dontcare is a no-op (it rebinds a local), so officially raw ids are the class ids: 0
  'unlabeled' is channel 0 and the 150 classes channels 1..150. ``ade_label_mapping="official"``
  (default, needed for official checkpoints) keeps that; ``"shifted"`` maps raw k to k - 1
  and raw 0 to dontcare (150), as the official comment intended.
- coco-stuff: ``{phase}_img/``, ``{phase}_label/``, ``{phase}_inst/`` (plus ``*_portrait``
  folders in train, when present, as officially); raw 255 'unlabeled' becomes dontcare (182).
- custom: ``images/``, ``labels/`` and optionally ``instances/`` in ``dataroot`` or in
  ``dataroot/<phase>/``, or explicit ``image_dir=``, ``label_dir=``, ``instance_dir=``; files
  pair by stem; ``label_nc=`` is required; with ``contain_dontcare_label=True`` raw 255 becomes
  dontcare (label_nc).
- synthetic: the built-in scenes of ``data.synthetic`` (no dataroot; ``max_samples`` scenes,
  default 1000; val uses scene indices from 2**31 of the same seed, disjoint from train).

Images may have any extension of ``IMAGE_EXTENSIONS`` in every layout (data/layouts.py); label
and instance maps must be lossless (PNG): JPEG and WebP maps are refused when the dataset is
built. 16-bit grayscale photos are scaled to 8 bits, id maps keep their exact values
(data/image_io.py).

Randomness: crop position and flip of item ``i`` come from
``np.random.default_rng([seed, epoch, i])``, never the global RNG, so any worker count or
sampler gives the same items. Bad input (a file without its partner, two files of one sample,
lossy maps, label values that are neither a class nor dontcare, size mismatches, unreadable
files) raises FileNotFoundError / ValueError naming the file, what was found and what was
expected; ``skip_invalid=True`` (``--skip-invalid`` of train.py and run_analysis.py) skips such
samples instead, lists them in ``skipped`` and logs the count.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from data.icpe import DEFAULT_MODE, MODES, icpe_map
from data.image_io import SKIP_HINT, check_size, read_map, read_photo
from data.layouts import IMAGE_EXTENSIONS, SamplePaths, custom_dirs, custom_has_instances, layout_samples, need_dir, \
    stem_samples
from data.presets import DATASETS, canonical_preset
from data.synthetic import SyntheticScenes
from data.transforms import Preprocess, draw_params, transform_icpe, transform_image, transform_map

logger = logging.getLogger(__name__)

PHASES = ("train", "val")
SYNTHETIC_VAL_FIRST_INDEX = 2 ** 31


@dataclass(frozen=True)
class LabelMapping:
    """How raw label-file values become class ids."""

    num_classes: int                # raw first_raw .. first_raw + num_classes - 1 -> 0 .. num_classes - 1
    first_raw: int = 0              # raw id of class 0
    dontcare_raw: int | None = None  # raw id that becomes dontcare_class, or None
    dontcare_class: int = 0         # class id of dontcare (label_nc)
    icpe_skip_raw: int | None = None  # raw id that corrected ICPE leaves out (dontcare, unlabeled)

    def expected(self) -> str:
        last = self.first_raw + self.num_classes - 1
        text = f"class ids {self.first_raw}..{last}"
        if self.dontcare_raw is not None:
            text += f" or {self.dontcare_raw} (dontcare, becomes {self.dontcare_class})"
        return text

    def to_class_ids(self, raw: np.ndarray, source: str, preset: str) -> np.ndarray:
        """Class ids int64 [H, W]; ValueError naming ``source`` and the bad values otherwise."""
        size = max(256, self.first_raw + self.num_classes, (self.dontcare_raw or 0) + 1)
        table = np.full(size, -1, dtype=np.int64)
        table[self.first_raw:self.first_raw + self.num_classes] = np.arange(self.num_classes)
        if self.dontcare_raw is not None:
            table[self.dontcare_raw] = self.dontcare_class
        if raw.min() < 0 or raw.max() >= size:
            mapped = table[np.clip(raw, 0, size - 1)]
            mapped[(raw < 0) | (raw >= size)] = -1
        else:
            mapped = table[raw]
        bad = mapped < 0
        if bad.any():
            values = np.unique(raw[bad])
            shown = values[:10].tolist() + (["..."] if values.size > 10 else [])
            raise ValueError(f"label {source} has value(s) {shown} that are neither a class nor "
                             f"dontcare; expected {self.expected()} for preset {preset!r}. Check that "
                             f"the preset (label_nc) matches the dataset, {SKIP_HINT}")
        return mapped


@dataclass(frozen=True)
class DataPreset:
    """Data options of one official dataset (network options come from models.presets)."""

    layout: str                   # cityscapes | ade20k | coco | custom | synthetic
    label_nc: int                 # classes without dontcare
    contain_dontcare_label: bool  # one more class channel (label_nc) for dontcare
    no_instance: bool             # no instance maps (instance = zeros)
    preprocess_mode: str          # resize_and_crop | fixed
    load_size: int                # train resize (resize_and_crop)
    load_size_test: int           # val resize
    crop_size: int                # output width
    aspect_ratio: float           # output width / height (fixed)
    mapping: LabelMapping         # raw label values -> class ids


def _preset(name: str, layout: str, mapping: LabelMapping, preprocess_mode: str = "resize_and_crop",
            load_size: int = 286, load_size_test: int = 256) -> DataPreset:
    net = DATASETS[name]
    return DataPreset(layout, net.get("label_nc", 0), net["contain_dontcare_label"], net["no_instance"],
                      preprocess_mode, load_size, load_size_test, net["crop_size"],
                      net["aspect_ratio"], mapping)


ADE_MAPPINGS = {
    "official": LabelMapping(151, icpe_skip_raw=0),
    "shifted": LabelMapping(150, first_raw=1, dontcare_raw=0, dontcare_class=150, icpe_skip_raw=0),
}
# Official dataset options (tzt101/CLADE data/*_dataset.py); crop_size 512 'fixed' = 512 x 256.
DATA_PRESETS: dict[str, DataPreset] = {
    "cityscapes": _preset("cityscapes", "cityscapes", LabelMapping(35), "fixed", 512, 512),
    "ade20k": _preset("ade20k", "ade20k", ADE_MAPPINGS["official"]),
    "ade20k-outdoor": _preset("ade20k-outdoor", "ade20k", ADE_MAPPINGS["official"]),
    "coco-stuff": _preset("coco-stuff", "coco", LabelMapping(182, dontcare_raw=255, dontcare_class=182,
                                                             icpe_skip_raw=255)),
    "custom": _preset("custom", "custom", LabelMapping(0)),
    "synthetic": _preset("synthetic", "synthetic", LabelMapping(8, dontcare_raw=8, dontcare_class=8,
                                                                icpe_skip_raw=8), "fixed", 64, 64),
}


@dataclass
class Skipped:
    """A sample left out by ``skip_invalid=True`` and why."""

    path: str
    reason: str


@dataclass
class ScanReport:
    """Result of ``PairedDataset.scan``."""

    checked: int                                       # samples checked
    invalid: list[Skipped] = field(default_factory=list)  # samples that failed (dropped if skip_invalid)


class PairedDataset(Dataset):
    """Image / label (/ instance) files with the official preprocessing; see the module docstring."""

    def __init__(self, samples: list[SamplePaths], preset_name: str, preset: DataPreset,
                 preprocess: Preprocess, *, with_dist: bool = False, icpe_mode: str = DEFAULT_MODE,
                 skip_invalid: bool = False, seed: int = 0, skipped: list[Skipped] | None = None):
        if icpe_mode not in MODES:
            raise ValueError(f"icpe_mode={icpe_mode!r}; expected one of {list(MODES)}")
        self.samples, self.preset_name, self.preset = list(samples), preset_name, preset
        self.preprocess, self.with_dist, self.icpe_mode = preprocess, with_dist, icpe_mode
        self.skip_invalid, self.seed, self.epoch = skip_invalid, seed, 0
        self.skipped: list[Skipped] = list(skipped or [])
        self.scanned = False  # every file decoded and checked by scan() (the trainer then skips its own)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Use the random crops / flips of ``epoch`` (call it in every process, as the sampler's)."""
        self.epoch = epoch

    def _read(self, paths: SamplePaths, decode_image: bool = True):
        """Image, raw label, class ids and instance ids at full size; raises on bad input."""
        image = read_photo(paths.image, decode_image)
        raw = read_map(paths.label, "label")
        check_size(paths.label, (raw.shape[1], raw.shape[0]), paths.image, image.size, "label")
        label = self.preset.mapping.to_class_ids(raw, str(paths.label), self.preset_name)
        instance = None
        if not self.preset.no_instance:
            instance = read_map(paths.instance, "instance map")
            check_size(paths.instance, (instance.shape[1], instance.shape[0]), paths.image,
                        image.size, "instance map")
        return image, raw, label, instance

    def _load(self, index: int) -> dict:
        paths = self.samples[index]
        image, raw, label, instance = self._read(paths)
        pre = self.preprocess
        params = draw_params(pre, np.random.default_rng([self.seed, self.epoch, index]))
        h, w = pre.output_size
        if self.with_dist:
            skip = self.preset.mapping.icpe_skip_raw if self.icpe_mode == "corrected" else None
            dist = transform_icpe(icpe_map(raw, mode=self.icpe_mode, dontcare=skip), pre, params, self.icpe_mode)
        else:
            dist = torch.zeros(2, h, w)
        instance_t = (torch.zeros(1, h, w, dtype=torch.long) if instance is None else
                      torch.from_numpy(transform_map(instance, pre, params).astype(np.int64))[None])
        return {"label": torch.from_numpy(transform_map(label, pre, params).copy())[None],
                "instance": instance_t,
                "image": transform_image(image, pre, params),
                "dist": dist,
                "path": str(paths.image)}

    def __getitem__(self, index: int) -> dict:
        if not self.skip_invalid:
            return self._load(index)
        # Invalid samples are replaced by the next valid one, deterministically.
        for offset in range(len(self.samples)):
            candidate = (index + offset) % len(self.samples)
            try:
                return self._load(candidate)
            except (ValueError, FileNotFoundError) as error:
                self.skipped.append(Skipped(str(self.samples[candidate].image), str(error)))
                logger.warning("skipped an invalid sample (%d skipped so far in this process): %s",
                               len(self.skipped), error)
        raise ValueError(f"all {len(self.samples)} samples of this {self.preset_name} dataset are invalid; "
                         f"first problem: {self.skipped[0].reason if self.skipped else 'none'}")

    def keep_valid(self, count: int) -> None:
        """Keep the first ``count`` samples that read correctly, in order (fewer if fewer are).

        For a fixed evaluation set: with ``skip_invalid``, reading substitutes the next valid
        sample for an invalid one, so a capped set would hold that sample twice; here the
        invalid ones are dropped (and listed in ``skipped``) before any is read by index.
        Without ``skip_invalid`` the first problem is raised.
        """
        self.samples, invalid = self._readable_samples(decode_images=True, limit=count)
        self.skipped += invalid
        self.scanned = True   # every kept sample was decoded and checked

    def _readable_samples(self, *, decode_images: bool, limit: int | None = None) -> tuple[list, list[Skipped]]:
        """(samples that read correctly, up to ``limit``; the invalid ones met on the way); the
        first problem is raised unless ``skip_invalid``."""
        valid, invalid = [], []
        for paths in self.samples:
            if limit is not None and len(valid) == limit:
                break
            try:
                self._read(paths, decode_images)
                valid.append(paths)
            except (ValueError, FileNotFoundError) as error:
                if not self.skip_invalid:
                    raise
                invalid.append(Skipped(str(paths.image), str(error)))
        return valid, invalid

    def scan(self, decode_images: bool = True) -> ScanReport:
        """Read and check every sample now (decoding each file, so it takes a while).

        ``decode_images=False`` reads only the images' headers (sizes), not their pixels:
        much faster, but a truncated image is then found only when it is loaded (and
        ``scanned`` stays False). Without ``skip_invalid`` the first problem is raised (its
        message names the file, the value found and the one expected); with it, invalid
        samples are dropped from the dataset, listed in the report and ``skipped``, and their
        count is logged.
        """
        report = ScanReport(checked=len(self.samples))
        valid, report.invalid = self._readable_samples(decode_images=decode_images)
        if report.invalid:
            self.samples = valid
            self.skipped += report.invalid
            logger.warning("scan skipped %d invalid of %d %s samples; first: %s", len(report.invalid),
                           report.checked, self.preset_name, report.invalid[0].reason)
        self.scanned = decode_images
        return report


def _resolve_preprocess(preset: DataPreset, phase: str, crop_size, load_size, flip) -> Preprocess:
    crop = crop_size or preset.crop_size
    base = preset.load_size if phase == "train" else preset.load_size_test
    # Keep the official zoom (286 / 256 in train) when only the crop size is changed.
    load = load_size or (base if crop == preset.crop_size else round(crop * base / preset.crop_size))
    return Preprocess(preset.preprocess_mode, load, crop, preset.aspect_ratio,
                      phase == "train" if flip is None else flip)


def build_dataset(preset: str, dataroot, phase: str = "train", *, crop_size: int | None = None,
                  load_size: int | None = None, flip: bool | None = None, with_dist: bool = False,
                  icpe_mode: str = DEFAULT_MODE, skip_invalid: bool = False, seed: int = 0,
                  max_samples: int | None = None, ade_label_mapping: str = "official",
                  label_nc: int | None = None, contain_dontcare_label: bool = False,
                  image_dir=None, label_dir=None, instance_dir=None) -> Dataset:
    """Dataset of ``preset`` under ``dataroot`` (layouts in the module docstring).

    Defaults follow the official options: train resizes to 286 and crops 256 with random flips
    (Cityscapes: a fixed 512 x 256 resize), val resizes to 256 without flips. ``label_nc``,
    ``contain_dontcare_label`` and the ``*_dir`` options are for the custom preset only.
    """
    name = canonical_preset(preset)
    if phase not in PHASES:
        raise ValueError(f"phase={phase!r}; expected one of {list(PHASES)}")
    data = DATA_PRESETS[name]
    if name == "synthetic":
        return SyntheticScenes(1000 if max_samples is None else max_samples, crop_size or data.crop_size,
                               seed, with_dist, icpe_mode,
                               first_index=0 if phase == "train" else SYNTHETIC_VAL_FIRST_INDEX)
    if name == "custom":
        if label_nc is None:
            raise ValueError("preset 'custom' needs label_nc=<number of classes without dontcare>")
        mapping = LabelMapping(label_nc, dontcare_raw=255 if contain_dontcare_label else None,
                               dontcare_class=label_nc, icpe_skip_raw=255 if contain_dontcare_label else None)
        dirs = custom_dirs(dataroot, phase, image_dir, label_dir, instance_dir)
        data = replace(data, label_nc=label_nc, contain_dontcare_label=contain_dontcare_label,
                       no_instance=dirs[2] is None, mapping=mapping)
    elif label_nc is not None or image_dir or label_dir or instance_dir:
        raise ValueError(f"label_nc / image_dir / label_dir / instance_dir are options of the custom "
                         f"preset; preset {name!r} has a fixed layout and label_nc={data.label_nc}")
    if data.layout == "ade20k":
        if ade_label_mapping not in ADE_MAPPINGS:
            raise ValueError(f"ade_label_mapping={ade_label_mapping!r}; expected one of {list(ADE_MAPPINGS)}")
        data = replace(data, mapping=ADE_MAPPINGS[ade_label_mapping])

    problems: list[tuple[Path, Exception]] = []
    if data.layout == "custom":
        for folder, what in zip(dirs, ("image", "label", "instance")):
            if folder is not None:
                need_dir(folder, f"custom {what}")
        samples = stem_samples([dirs[0]], [dirs[1]], [dirs[2]] if dirs[2] else None, problems)
    else:
        if dataroot is None:
            raise ValueError(f"preset {name!r} needs dataroot (the dataset folder)")
        root = need_dir(Path(dataroot), f"{name} dataset")
        samples = layout_samples(data.layout, root, phase, not data.no_instance, problems)

    if problems and not skip_invalid:
        raise problems[0][1]
    skipped = [Skipped(str(path), str(error)) for path, error in problems]
    if skipped:
        logger.warning("skipped %d unpaired, duplicate or lossy files of %s (skip_invalid); first: %s",
                       len(skipped), name, skipped[0].reason)
    if max_samples is not None:
        samples = samples[:max_samples]
    if not samples and skipped:
        raise ValueError(f"every {name} sample for phase {phase!r} under {dataroot} is invalid ({len(skipped)} "
                         f"files skipped); first: {skipped[0].reason}")
    if not samples:
        raise ValueError(f"no {name} samples found for phase {phase!r} under {dataroot}; expected the "
                         f"layout described in data/datasets.py")
    return PairedDataset(samples, name, data, _resolve_preprocess(data, phase, crop_size, load_size, flip),
                         with_dist=with_dist, icpe_mode=icpe_mode, skip_invalid=skip_invalid, seed=seed,
                         skipped=skipped)


__all__ = ["ADE_MAPPINGS", "DATA_PRESETS", "IMAGE_EXTENSIONS", "PHASES", "DataPreset", "LabelMapping",
           "PairedDataset", "SamplePaths", "ScanReport", "Skipped", "build_dataset", "custom_has_instances"]
