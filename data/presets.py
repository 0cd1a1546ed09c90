"""Facts about the datasets: classes, dontcare, instance maps and default image size.

The values are those of the official dataset classes (tzt101/CLADE ``data/*_dataset.py``).
``models.presets`` builds the network presets on top of these; nothing here knows about
networks.

    DATASETS["ade20k"]["label_nc"]   # 150 classes, plus one dontcare channel
"""
from __future__ import annotations

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
