"""Building blocks of the detector: conv-BN-SiLU, depthwise-separable conv, CSP block, SPPF."""

from __future__ import annotations

import torch
from torch import nn


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm -> SiLU, 'same' padding."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.1)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DWSConv(nn.Module):
    """Depthwise k x k conv then pointwise 1 x 1 conv, each with BN and SiLU (about k^2 x fewer weights)."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1) -> None:
        super().__init__()
        self.dw = ConvBNAct(c_in, c_in, k, s, groups=c_in)
        self.pw = ConvBNAct(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


def conv(c_in: int, c_out: int, k: int = 3, s: int = 1, depthwise: bool = False) -> nn.Module:
    """A dense conv, or a depthwise-separable one where ``depthwise`` and the kernel is spatial."""
    return DWSConv(c_in, c_out, k, s) if depthwise and k > 1 else ConvBNAct(c_in, c_out, k, s)


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True, depthwise: bool = False) -> None:
        super().__init__()
        self.cv1 = conv(c, c, 3, depthwise=depthwise)
        self.cv2 = conv(c, c, 3, depthwise=depthwise)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class CSPBlock(nn.Module):
    """Cross-stage-partial block: split into two halves, run ``n`` bottlenecks on one, concat every output."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True, depthwise: bool = False) -> None:
        super().__init__()
        self.hidden = max(8, c_out // 2)
        self.cv1 = ConvBNAct(c_in, 2 * self.hidden, 1)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden, shortcut, depthwise) for _ in range(n))
        self.cv2 = ConvBNAct((2 + n) * self.hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.cv1(x).chunk(2, dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5 x 5 max-pools, concatenated."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = ConvBNAct(c_in, hidden, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.cv2 = ConvBNAct(4 * hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, dim=1))
