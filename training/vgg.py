"""VGG19 feature slices for the perceptual loss, loaded from a local weights file.

torchvision's ImageNet VGG19 weights are never downloaded here: they are read from the torch
hub cache (where ``torchvision.models.vgg19(weights="IMAGENET1K_V1")`` would have put them) or
from an explicit path, and a missing file is an error that says where to put it.

    vgg = VGG19Features.from_pretrained()            # hub cache
    vgg = VGG19Features.from_pretrained("vgg19.pth")  # explicit file
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from fileio import WeightsFileError, load_weights

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"
# Official slice boundaries in torchvision's vgg19().features: relu1_1, relu2_1, relu3_1,
# relu4_1, relu5_1.
SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))


class VGGWeightsMissingError(FileNotFoundError):
    """The VGG19 ImageNet weights file is not where it was looked for."""


class VGGWeightsInvalidError(WeightsFileError):
    """The VGG19 weights file exists but is not torchvision's VGG19 state_dict (empty, truncated, other)."""


def default_vgg_weights_path() -> Path:
    """``<torch hub dir>/checkpoints/vgg19-dcbb9e9d.pth`` (respects $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def resolve_vgg_weights(path: str | Path | None = None) -> Path:
    """The weights file to use; raise VGGWeightsMissingError saying how to get it."""
    target = Path(path) if path is not None else default_vgg_weights_path()
    if target.is_file():
        return target
    raise VGGWeightsMissingError(
        f"VGG19 weights not found at {str(target)!r}. The perceptual loss needs torchvision's "
        f"ImageNet VGG19 file {VGG19_FILE} (from {VGG19_URL}); download it on a machine with "
        f"internet and copy it to {str(default_vgg_weights_path())!r} or pass --vgg-weights PATH, "
        f"or train without the VGG loss with --no-vgg.")


def _vgg19_features() -> nn.Sequential:
    """torchvision's vgg19().features layout, without building the 120M-parameter classifier."""
    try:
        from torchvision.models.vgg import cfgs, make_layers
        return make_layers(cfgs["E"], batch_norm=False)
    except ImportError:  # private helpers moved: build the whole network
        from torchvision.models import vgg19
        return vgg19(weights=None).features


class VGG19Features(nn.Module):
    """The official ``VGG19`` loss network: five slices ending at relu1_1 ... relu5_1.

    Frozen (no gradients to its weights) and used as is on images in [-1, 1], without
    ImageNet normalisation, exactly as the official SPADE/CLADE VGG loss.
    """

    def __init__(self):
        super().__init__()
        features = _vgg19_features()
        for i, (start, end) in enumerate(SLICES, 1):
            # Official layer names (slice2.2, slice2.5, ...) so its slices read the same.
            self.add_module(f"slice{i}", nn.Sequential(OrderedDict((str(j), features[j]) for j in range(start, end))))
        # torchvision's ReLUs are in-place; keep slice outputs intact for the loss.
        for m in self.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> "VGG19Features":
        """Build and load the ImageNet weights from ``path`` or the hub cache."""
        file = resolve_vgg_weights(path)
        expected = (f"expected torchvision's ImageNet VGG19 state_dict {VGG19_FILE} (about 550 MB, from {VGG19_URL}); "
                    f"download it again or pass another --vgg-weights, or train without the VGG loss (--no-vgg)")
        state = load_weights(file, what="VGG19 weights", expected=expected, error=VGGWeightsInvalidError)
        if not isinstance(state, dict) or "features.0.weight" not in state:
            keys = list(state)[:3] if isinstance(state, dict) else type(state).__name__
            raise VGGWeightsInvalidError(f"VGG19 weights {str(file)!r} hold {keys}, not 'features.0.weight', ...; "
                                         f"{expected}")
        net = cls()
        # The file holds the whole classifier ('features.N.weight', 'classifier...'); keep the
        # convolutions this network uses and rename them to 'sliceK.N.weight'.
        mapped = {}
        for i, (start, end) in enumerate(SLICES, 1):
            for j in range(start, end):
                for kind in ("weight", "bias"):
                    key = f"features.{j}.{kind}"
                    if key in state:
                        mapped[f"slice{i}.{j}.{kind}"] = state[key]
        net.load_state_dict(mapped, strict=True)
        return net.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i in range(1, len(SLICES) + 1):
            x = getattr(self, f"slice{i}")(x)
            out.append(x)
        return out
