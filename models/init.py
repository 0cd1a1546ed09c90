"""Official weight initialisation (``init_type='xavier'``, ``init_variance=0.02``)."""
from torch import nn


def init_official(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """Xavier-normal(gain) on every Conv/Linear weight, zero biases, as the official code.

    CLADE's class tables keep their own init (gamma ~ U(0, 1), beta = 0); the ICPE 1x1
    convs are overwritten like every conv (the official code does the same).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            weight = m.weight_orig if hasattr(m, "weight_orig") else m.weight
            nn.init.xavier_normal_(weight.data, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias.data)
    return module
