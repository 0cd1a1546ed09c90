"""Official input preprocessing: one-hot semantic map with the instance-edge channel last.

    semantic = make_semantic(label, instance, config)   # label: [N, 1, H, W] class ids
"""
from __future__ import annotations

import torch


def instance_edges(instance: torch.Tensor) -> torch.Tensor:
    """Official ``get_edges``: 1 where a pixel differs from its right/left/up/down neighbour.

    ``instance``: [N, 1, H, W] instance ids (any dtype). Returns float32 of the same shape.
    """
    t = instance
    edge = torch.zeros(t.shape, dtype=torch.bool, device=t.device)
    dx = t[..., :, 1:] != t[..., :, :-1]
    dy = t[..., 1:, :] != t[..., :-1, :]
    edge[..., :, 1:] |= dx
    edge[..., :, :-1] |= dx
    edge[..., 1:, :] |= dy
    edge[..., :-1, :] |= dy
    return edge.float()


def check_label_range(label: torch.Tensor, class_nc: int, source: str = "label map") -> None:
    """Raise ValueError naming the offending values if ``label`` has ids outside [0, class_nc)."""
    bad = label[(label < 0) | (label >= class_nc)]
    if bad.numel():
        values = sorted(set(bad.unique().tolist()))[:10]
        raise ValueError(f"{source} has class ids {values} outside [0, {class_nc - 1}] "
                         f"(label_nc + dontcare = {class_nc}; raw 255 'unknown' must be mapped to "
                         f"label_nc, and needs contain_dontcare_label=True)")


def one_hot(label: torch.Tensor, class_nc: int, dtype=torch.float32) -> torch.Tensor:
    """[N, 1, H, W] class ids -> [N, class_nc, H, W] one-hot (official ``scatter_``)."""
    n, _, h, w = label.shape
    out = torch.zeros(n, class_nc, h, w, dtype=dtype, device=label.device)
    return out.scatter_(1, label.long(), 1.0)


def make_semantic(label: torch.Tensor, instance: torch.Tensor | None, config,
                  dtype=torch.float32) -> torch.Tensor:
    """Generator / discriminator input from a class-id map and an instance map.

    ``label``: [N, 1, H, W] or [N, H, W] ids in [0, label_nc + dontcare); ``instance``: same
    shape, required unless ``config.no_instance``. ``config``: any config with label fields.
    """
    if label.dim() == 3:
        label = label[:, None]
    if label.dim() != 4 or label.shape[1] != 1:
        raise ValueError(f"label has shape {tuple(label.shape)}; expected [N, 1, H, W] or [N, H, W]")
    check_label_range(label, config.class_nc)
    semantic = one_hot(label, config.class_nc, dtype)
    if config.no_instance:
        return semantic
    if instance is None:
        raise ValueError("this config uses instance maps (no_instance=False); pass instance=[N, 1, H, W]")
    if instance.dim() == 3:
        instance = instance[:, None]
    if instance.shape != label.shape:
        raise ValueError(f"instance has shape {tuple(instance.shape)}; expected {tuple(label.shape)} like the label")
    return torch.cat((semantic, instance_edges(instance).to(dtype)), dim=1)
