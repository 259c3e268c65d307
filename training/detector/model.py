"""The lightweight anchor-free defect detector (the student, the baseline, and the teacher's base).

CSP backbone -> PAN neck (levels P3/P4/P5 at strides 8/16/32) -> decoupled head per level (classification
and box regression, box as a distribution over ``reg_max`` bins per side when ``reg_max > 1``), plus an
optional semantic-segmentation head on P3. ``forward`` returns a :class:`DetectorOutput` whose ``features``
are the neck outputs; a ``fuse`` callable may rewrite them before the heads (the teacher's fusion).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.detector.layers import SPPF, ConvBNAct, CSPBlock, conv

STRIDES = (8, 16, 32)
# name -> (width multiplier, depth multiplier); base widths 64..1024 and depths 3/6/6/3 as in the CSP family
SIZES: dict[str, tuple[float, float]] = {"n": (0.25, 0.33), "s": (0.5, 0.33), "m": (0.75, 0.67)}
_BASE_WIDTHS = (64, 128, 256, 512, 1024)
_BASE_DEPTHS = (3, 6, 6, 3)


@dataclass(frozen=True)
class DetectorSpec:
    """Everything needed to rebuild a detector's weights layout (stored with every checkpoint)."""

    num_classes: int
    size: str = "n"
    reg_max: int = 16  # bins per box side (distribution focal loss); 1 = direct distances
    seg_head: bool = False
    # depthwise-separable convs in the deep backbone stages, the neck and the heads (fewer FLOPs), or dense 3 x 3
    # convs throughout (more FLOPs, but CPUs run dense convs far closer to peak: choose by measured latency)
    depthwise: bool = True
    # the heads' convs alone (None: as ``depthwise``): the finest head's dense 3 x 3 convs cost a quarter of the
    # dense model's FLOPs
    depthwise_heads: bool | None = None

    @property
    def heads_depthwise(self) -> bool:
        return self.depthwise if self.depthwise_heads is None else self.depthwise_heads

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"model size must be one of {sorted(SIZES)}, got {self.size!r}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.reg_max < 1:
            raise ValueError(f"reg_max must be >= 1, got {self.reg_max}")


@dataclass
class DetectorOutput:
    features: list[torch.Tensor]  # neck outputs at strides 8/16/32
    cls_logits: torch.Tensor  # (B, A, C)
    box_dist: torch.Tensor  # (B, A, 4 * reg_max) raw regression outputs
    seg_logits: torch.Tensor | None  # (B, C + 1, S/8, S/8)


class Backbone(nn.Module):
    def __init__(self, widths: list[int], depths: list[int], depthwise: bool = True) -> None:
        super().__init__()
        c0, c1, c2, c3, c4 = widths
        dw = depthwise
        self.stem = ConvBNAct(3, c0, 3, 2)
        self.stage1 = nn.Sequential(ConvBNAct(c0, c1, 3, 2), CSPBlock(c1, c1, depths[0]))
        self.stage2 = nn.Sequential(ConvBNAct(c1, c2, 3, 2), CSPBlock(c2, c2, depths[1]))
        # the deeper stages are wide and low-resolution: where depthwise-separable convs save the most FLOPs
        self.stage3 = nn.Sequential(conv(c2, c3, 3, 2, depthwise=dw), CSPBlock(c3, c3, depths[2], depthwise=dw))
        self.stage4 = nn.Sequential(conv(c3, c4, 3, 2, depthwise=dw), CSPBlock(c4, c4, depths[3], depthwise=dw),
                                    SPPF(c4, c4))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stage1(self.stem(x))
        p3 = self.stage2(x)
        p4 = self.stage3(p3)
        p5 = self.stage4(p4)
        return [p3, p4, p5]


class PANNeck(nn.Module):
    """Top-down then bottom-up path aggregation over P3/P4/P5."""

    def __init__(self, widths: list[int], depth: int, depthwise: bool = True) -> None:
        super().__init__()
        _, _, c3, c4, c5 = widths
        dw = depthwise
        self.td4 = CSPBlock(c5 + c4, c4, depth, shortcut=False, depthwise=dw)
        self.td3 = CSPBlock(c4 + c3, c3, depth, shortcut=False)
        self.down3 = conv(c3, c3, 3, 2, depthwise=dw)
        self.bu4 = CSPBlock(c3 + c4, c4, depth, shortcut=False, depthwise=dw)
        self.down4 = conv(c4, c4, 3, 2, depthwise=dw)
        self.bu5 = CSPBlock(c4 + c5, c5, depth, shortcut=False, depthwise=dw)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = feats
        t4 = self.td4(torch.cat([F.interpolate(p5, scale_factor=2.0, mode="nearest"), p4], 1))
        n3 = self.td3(torch.cat([F.interpolate(t4, scale_factor=2.0, mode="nearest"), p3], 1))
        n4 = self.bu4(torch.cat([self.down3(n3), t4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), p5], 1))
        return [n3, n4, n5]


def classification_width(c_in: int, num_classes: int) -> int:
    """Channels of a head's classification branch: at least its input's, more for many classes (up to 128)."""
    return max(c_in, min(num_classes * 4, 128))


class DecoupledHead(nn.Module):
    """Separate classification and regression branches for one pyramid level."""

    def __init__(self, c_in: int, num_classes: int, reg_max: int, stride: int, depthwise: bool = True,
                 c_cls: int | None = None) -> None:
        super().__init__()
        c_cls = c_cls or classification_width(c_in, num_classes)
        c_reg = max(16, c_in // 4, 4 * reg_max)
        dw = depthwise
        self.cls = nn.Sequential(conv(c_in, c_cls, 3, depthwise=dw), conv(c_cls, c_cls, 3, depthwise=dw),
                                 nn.Conv2d(c_cls, num_classes, 1))
        self.reg = nn.Sequential(conv(c_in, c_reg, 3, depthwise=dw), conv(c_reg, c_reg, 3, depthwise=dw),
                                 nn.Conv2d(c_reg, 4 * reg_max, 1))
        prior = 0.01
        nn.init.constant_(self.cls[-1].bias, -math.log((1 - prior) / prior))
        nn.init.constant_(self.reg[-1].bias, 1.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls(x), self.reg(x)


class SegHead(nn.Module):
    """Per-pixel class logits (background = channel 0) on the stride-8 level."""

    def __init__(self, c_in: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBNAct(c_in, c_in, 3), ConvBNAct(c_in, c_in, 3), nn.Conv2d(c_in, num_classes + 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def make_anchors(input_size: int, strides: tuple[int, ...] = STRIDES, device: torch.device | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor-point centres (A, 2) in canvas pixels and their strides (A, 1), level-major, row-major."""
    points, stride_col = [], []
    for s in strides:
        n = input_size // s
        coords = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) * s
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        points.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1))
        stride_col.append(torch.full((n * n, 1), float(s), device=device))
    return torch.cat(points), torch.cat(stride_col)


def dist_to_ltrb(box_dist: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Raw regression (B, A, 4 * reg_max) -> distances left/top/right/bottom in stride units (B, A, 4)."""
    if reg_max == 1:
        return F.softplus(box_dist)
    b, a, _ = box_dist.shape
    prob = box_dist.view(b, a, 4, reg_max).softmax(-1)
    bins = torch.arange(reg_max, device=box_dist.device, dtype=box_dist.dtype)
    return (prob * bins).sum(-1)


def ltrb_to_xyxy(ltrb: torch.Tensor, anchors: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Distances (B, A, 4) in stride units around anchor points -> boxes xyxy in canvas pixels."""
    lt, rb = ltrb[..., :2] * strides, ltrb[..., 2:] * strides
    return torch.cat([anchors - lt, anchors + rb], -1)


class DefectDetector(nn.Module):
    def __init__(self, spec: DetectorSpec) -> None:
        super().__init__()
        self.spec = spec
        wm, dm = SIZES[spec.size]
        widths = [max(16, int(round(w * wm / 8)) * 8) for w in _BASE_WIDTHS]
        depths = [max(1, round(d * dm)) for d in _BASE_DEPTHS]
        self.widths = widths
        self.backbone = Backbone(widths, depths, spec.depthwise)
        self.neck = PANNeck(widths, depths[0], spec.depthwise)
        self.feature_channels = widths[2:]
        # dense heads share one classification width (the finest level's): dense 3 x 3 convs at 256 channels
        # would cost more than the rest of the model
        dw_heads = spec.heads_depthwise
        c_cls = None if dw_heads else classification_width(self.feature_channels[0], spec.num_classes)
        self.heads = nn.ModuleList(DecoupledHead(c, spec.num_classes, spec.reg_max, s, dw_heads, c_cls)
                                   for c, s in zip(self.feature_channels, STRIDES))
        self.seg = SegHead(self.feature_channels[0], spec.num_classes) if spec.seg_head else None

    def neck_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Neck outputs at strides 8/16/32 (what the teacher fuses into and distillation matches)."""
        return self.neck(self.backbone(x))

    def forward(self, x: torch.Tensor,
                fuse: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None) -> DetectorOutput:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"input height and width must be multiples of 32, got {tuple(x.shape[-2:])}")
        feats = self.neck_features(x)
        if fuse is not None:
            feats = fuse(feats)
        cls, reg = [], []
        for head, f in zip(self.heads, feats):
            c, r = head(f)
            cls.append(c.flatten(2))
            reg.append(r.flatten(2))
        seg = self.seg(feats[0]) if self.seg is not None else None
        return DetectorOutput(feats, torch.cat(cls, 2).transpose(1, 2), torch.cat(reg, 2).transpose(1, 2), seg)

    def decode(self, out: DetectorOutput, input_size: int) -> torch.Tensor:
        """(B, A, 4 + C): boxes xyxy in canvas pixels and class probabilities (the exported output)."""
        anchors, strides = make_anchors(input_size, device=out.cls_logits.device)
        boxes = ltrb_to_xyxy(dist_to_ltrb(out.box_dist, self.spec.reg_max), anchors, strides)
        return torch.cat([boxes, out.cls_logits.sigmoid()], -1)


class DeployModel(nn.Module):
    """What gets exported: canvas tensor (N, 3, S, S) -> detections (N, A, 4 + C) [, segmentation logits]."""

    def __init__(self, detector: DefectDetector, input_size: int) -> None:
        super().__init__()
        self.detector = detector.eval()
        self.input_size = input_size
        anchors, strides = make_anchors(input_size)
        self.register_buffer("anchors", anchors, persistent=False)
        self.register_buffer("strides", strides, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.detector(x)
        boxes = ltrb_to_xyxy(dist_to_ltrb(out.box_dist, self.detector.spec.reg_max), self.anchors, self.strides)
        dets = torch.cat([boxes, out.cls_logits.sigmoid()], -1)
        return dets if out.seg_logits is None else (dets, out.seg_logits)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, input_size: int) -> float:
    """Forward GFLOPs (multiply-add counted as 2) of one image, measured by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    model.train(was_training)
    return counter.get_total_flops() / 1e9
