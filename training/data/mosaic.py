"""Mosaic: four training canvases tiled around a random centre into one canvas of the same size.

Each tile is a whole S x S canvas translated so that one of its corners meets the centre, and cut to its
quadrant. Objects keep their scale, a batch sees four times as many backgrounds and defect contexts, and
defects are cut at tile borders the way a camera window cuts them. Every tile's placement is returned (the
translation from its own canvas and the quadrant it fills) so maps aligned with each source canvas (the
teacher's DDPM features) can be tiled the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffdefect_edge.preprocess import PAD_VALUE


@dataclass(frozen=True)
class TilePlacement:
    """Where one source canvas went: ``affine`` (3, 3) maps its pixels to the output canvas, ``region``
    (x0, y0, x1, y1) is the part of the output canvas it fills."""

    affine: np.ndarray
    region: tuple[float, float, float, float]


def clip_boxes(boxes: np.ndarray, region: tuple[float, float, float, float], min_visibility: float,
               min_size: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Boxes cut to ``region``; returns the cut boxes and the mask of those kept (at least ``min_visibility``
    of their area inside and ``min_size`` px on each side)."""
    x0, y0, x1, y1 = region
    cut = boxes.copy()
    cut[:, [0, 2]] = cut[:, [0, 2]].clip(x0, x1)
    cut[:, [1, 3]] = cut[:, [1, 3]].clip(y0, y1)
    w, h = cut[:, 2] - cut[:, 0], cut[:, 3] - cut[:, 1]
    full = ((boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)).clip(1e-6)
    keep = (w >= min_size) & (h >= min_size) & (w.clip(0) * h.clip(0) >= min_visibility * full)
    return cut, keep


def mosaic(tiles: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]], rng: np.random.Generator,
           min_visibility: float = 0.3, centre_range: tuple[float, float] = (0.25, 0.75), mask_ignore: int = 255
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, list[TilePlacement]]:
    """Four (canvas (S, S, 3) uint8, boxes (N, 4) canvas px, labels (N,), mask (S, S) or None) -> one canvas.

    Tile 0 fills the top-left quadrant with its bottom-right part, 1 the top-right, 2 the bottom-left, 3 the
    bottom-right. The centre is drawn uniformly in ``centre_range`` (fractions of S) along each axis. Where a
    tile has no mask while others do, its quadrant of the mask is ``mask_ignore``.
    """
    if len(tiles) != 4:
        raise ValueError(f"mosaic needs 4 tiles, got {len(tiles)}")
    size = tiles[0][0].shape[0]
    if any(t[0].shape[:2] != (size, size) for t in tiles):
        raise ValueError(f"mosaic tiles must all be square canvases of {size} px")
    cx, cy = (int(round(v * size)) for v in rng.uniform(*centre_range, 2))
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    with_mask = any(t[3] is not None for t in tiles)
    mask = np.full((size, size), mask_ignore, np.uint8) if with_mask else None
    out_boxes, out_labels, placements = [], [], []
    # (region in the output, translation of the tile's canvas)
    layout = [((0, 0, cx, cy), (cx - size, cy - size)), ((cx, 0, size, cy), (cx, cy - size)),
              ((0, cy, cx, size), (cx - size, cy)), ((cx, cy, size, size), (cx, cy))]
    for (image, boxes, labels, tile_mask), ((x0, y0, x1, y1), (dx, dy)) in zip(tiles, layout):
        placements.append(TilePlacement(np.array([[1.0, 0, dx], [0, 1, dy], [0, 0, 1]]), (x0, y0, x1, y1)))
        if x1 <= x0 or y1 <= y0:
            continue
        canvas[y0:y1, x0:x1] = image[y0 - dy:y1 - dy, x0 - dx:x1 - dx]
        if mask is not None and tile_mask is not None:
            mask[y0:y1, x0:x1] = tile_mask[y0 - dy:y1 - dy, x0 - dx:x1 - dx]
        if len(boxes):
            moved = boxes.astype(np.float32) + np.array([dx, dy, dx, dy], np.float32)
            cut, keep = clip_boxes(moved, (x0, y0, x1, y1), min_visibility)
            out_boxes.append(cut[keep])
            out_labels.append(labels[keep])
    boxes = np.concatenate(out_boxes).astype(np.float32) if out_boxes else np.zeros((0, 4), np.float32)
    labels = np.concatenate(out_labels) if out_labels else np.zeros((0,), np.int64)
    return canvas, boxes, labels, mask, placements
