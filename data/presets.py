"""Facts about the datasets: classes, dontcare, instance maps and default image size.

The values are those of the official dataset classes (tzt101/CLADE ``data/*_dataset.py``).
``models.presets`` builds the network presets on top of these; nothing here knows about
networks.

    DATASETS["ade20k"]["label_nc"]   # 150 classes, plus one dontcare channel
"""
from __future__ import annotations

from pathlib import Path

# label_nc: classes without dontcare; contain_dontcare_label: one more class channel for
# 'unknown'; no_instance: no instance maps; crop_size: output width; aspect_ratio: width / height.
DATASETS: dict[str, dict] = {
    "cityscapes": dict(label_nc=35, contain_dontcare_label=False, no_instance=False,
                       crop_size=512, aspect_ratio=2.0),
    "ade20k": dict(label_nc=150, contain_dontcare_label=True, no_instance=True,
                   crop_size=256, aspect_ratio=1.0),
    "ade20k-outdoor": dict(label_nc=150, contain_dontcare_label=True, no_instance=True,
                           crop_size=256, aspect_ratio=1.0),
    "coco-stuff": dict(label_nc=182, contain_dontcare_label=True, no_instance=False,
                       crop_size=256, aspect_ratio=1.0),
    # The built-in procedural dataset (data/synthetic.py): 8 classes + dontcare, instances.
    "synthetic": dict(label_nc=8, contain_dontcare_label=True, no_instance=False,
                      crop_size=64, aspect_ratio=1.0),
    # Every option settable; label_nc has no sensible default and must be given.
    "custom": dict(contain_dontcare_label=False, no_instance=False, crop_size=256, aspect_ratio=1.0),
}
# Names used by the official code and the reference files.
PRESET_ALIASES = {"coco": "coco-stuff", "ade20koutdoor": "ade20k-outdoor"}
OFFICIAL_PRESETS = ("cityscapes", "ade20k", "ade20k-outdoor", "coco-stuff")


def canonical_preset(preset: str) -> str:
    """Return the canonical preset name; raise ValueError listing the valid ones."""
    name = PRESET_ALIASES.get(preset, preset)
    if name not in DATASETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(DATASETS)} "
                         f"(aliases: {sorted(PRESET_ALIASES)})")
    return name


def check_data_source(preset: str, dataroot) -> None:
    """Refuse a preset / dataroot pair that would silently train or score on the wrong data:
    a dataroot that is no folder, a dataroot with the built-in 'synthetic' preset (which reads no
    folder), and a real preset without a dataroot (its class count does not match the scenes)."""
    name = canonical_preset(preset)
    if dataroot is not None:
        if not Path(dataroot).is_dir():
            raise ValueError(f"--dataroot {dataroot}: no such folder; expected the root of the "
                             f"{'dataset named by --preset' if name == 'synthetic' else name + ' dataset'}")
        if name == "synthetic":
            real = sorted(n for n in DATASETS if n != "synthetic")
            raise ValueError(f"--dataroot {dataroot} with --preset synthetic: the synthetic scenes are built in and "
                             f"read no folder; pass the dataset's preset ({', '.join(real)}; 'custom' for "
                             f"images/ + labels/ [+ instances/]) or drop --dataroot")
    elif name != "synthetic":
        classes = DATASETS[name].get("label_nc")
        what = f"{classes} classes" if classes else "its own classes"
        raise ValueError(f"--preset {preset} without --dataroot: the {name} preset ({what}) needs its dataset; "
                         f"pass --dataroot DIR, or --preset synthetic for the built-in scenes "
                         f"({DATASETS['synthetic']['label_nc']} classes)")
