"""Image grids of training samples: colourised label maps above real and generated images.

    save_sample_grid("samples/step_0000500.png", label, real, fake, class_nc=151)
"""
from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image


def label_palette(class_nc: int) -> torch.Tensor:
    """Fixed [class_nc, 3] colours in [0, 1] (seeded, so runs are comparable)."""
    g = torch.Generator().manual_seed(1234)
    return torch.rand(class_nc, 3, generator=g) * 0.8 + 0.2


def colorize_labels(label: torch.Tensor, class_nc: int) -> torch.Tensor:
    """[N, 1, H, W] class ids -> [N, 3, H, W] RGB in [0, 1]."""
    colours = label_palette(class_nc)[label[:, 0].long().clamp(0, class_nc - 1).cpu()]
    return colours.permute(0, 3, 1, 2)


def save_sample_grid(path, label: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                     class_nc: int, max_images: int = 8) -> Path:
    """PNG with three rows: colourised label, real image, generated image (images in [-1, 1])."""
    n = min(max_images, label.shape[0])
    rows = [colorize_labels(label[:n], class_nc),
            (real[:n].float().cpu() + 1) / 2, (fake[:n].float().cpu() + 1) / 2]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat(rows).clamp(0, 1), path, nrow=n, padding=2)
    return path
