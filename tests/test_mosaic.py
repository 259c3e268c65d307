"""Mosaic augmentation: boxes stay inside the canvas and on their defect's pixels, the teacher's feature maps
are tiled with the image, and the last epochs can be closed to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import ConfigError, config_from_dict
from training.data.augment import AugmentConfig
from training.data.mosaic import clip_boxes, mosaic
from training.data.torch_dataset import DetectionDataset
from training.teacher.feature_source import tile_features


def _tile(size: int, value: int, boxes: list[list[float]], label: int):
    image = np.full((size, size, 3), 20, np.uint8)
    for x1, y1, x2, y2 in boxes:
        image[int(y1):int(y2), int(x1):int(x2)] = value
    return image, np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), label, np.int64), None


def test_mosaic_keeps_boxes_inside_the_canvas_and_on_their_pixels():
    size = 96
    tiles = [_tile(size, 50 + 50 * k, [[10, 10, 40, 30], [60, 55, 90, 90], [0, 0, 96, 96]], k) for k in range(4)]
    seen_labels = set()
    for seed in range(20):
        canvas, boxes, labels, mask, placements = mosaic(tiles, np.random.default_rng(seed))
        assert canvas.shape == (size, size, 3) and mask is None and len(placements) == 4
        assert len(boxes) == len(labels) > 0
        assert (boxes >= 0).all() and (boxes <= size).all()
        assert ((boxes[:, 2] - boxes[:, 0]) >= 2).all() and ((boxes[:, 3] - boxes[:, 1]) >= 2).all()
        for (x1, y1, x2, y2), label in zip(boxes.astype(int), labels):
            # each box covers pixels of its own tile (tile k painted 50 + 50k), never another tile's
            patch = canvas[y1:y2, x1:x2, 0]
            assert (patch == 50 + 50 * label).mean() > 0.5
        # the four quadrants tile the canvas exactly
        area = sum((p.region[2] - p.region[0]) * (p.region[3] - p.region[1]) for p in placements)
        assert area == size * size
        seen_labels |= set(labels.tolist())
    assert seen_labels == {0, 1, 2, 3}


def test_mosaic_refuses_wrong_tiles():
    tiles = [_tile(64, 100, [[1, 1, 9, 9]], 0)] * 3
    with pytest.raises(ValueError, match="4 tiles"):
        mosaic(tiles, np.random.default_rng(0))
    with pytest.raises(ValueError, match="square canvases of 64"):
        mosaic(tiles + [_tile(32, 100, [[1, 1, 9, 9]], 0)], np.random.default_rng(0))


def test_clip_boxes_drops_mostly_hidden_and_thin_boxes():
    boxes = np.array([[0, 0, 10, 10], [8, 0, 30, 10], [0, 0, 11, 10]], np.float32)
    cut, keep = clip_boxes(boxes, (0, 0, 10, 10), min_visibility=0.3)
    assert keep.tolist() == [True, False, True]  # the second keeps 2 of 22 px width (9%)
    assert cut[2].tolist() == [0, 0, 10, 10]


def test_augment_config_names_a_bad_value():
    with pytest.raises(ConfigError, match="train.augment.*mosaic must be in"):
        config_from_dict({"train": {"augment": {"mosaic": 1.5}}})
    with pytest.raises(ConfigError, match="close_mosaic must be >= 0"):
        config_from_dict({"train": {"augment": {"close_mosaic": -1}}})


def test_dataset_mosaic_items_tile_the_feature_maps(tiny_dataset: Path):
    """Per-source marker maps (1 inside each source box), tiled with the item's placements, cover every box of
    the mosaic item: the teacher's DDPM features move exactly as the four images did."""
    from training.data import load_dataset

    size = 96
    ds = load_dataset(tiny_dataset)
    aug = AugmentConfig(mosaic=1.0, hflip=0.5, vflip=0.5, scale=(0.8, 1.2), translate=0.1)
    data = DetectionDataset(ds.records, size, aug, seed=1, with_affine=True)
    plain = DetectionDataset(ds.records, size)
    checked = 0
    for index in range(6):
        item = data[index]
        used = item["tile_index"] >= 0
        assert int(used.sum()) == 4 and int(item["tile_index"][0]) == index
        markers = []
        for source in item["tile_index"][used].tolist():
            m = torch.zeros(1, size, size)
            for x1, y1, x2, y2 in plain[source]["boxes"].round().int().tolist():
                m[:, y1:y2, x1:x2] = 1.0
            markers.append(m)
        tiled = tile_features(torch.stack(markers), torch.zeros(4, dtype=torch.long), item["tile_affine"][used],
                              item["tile_region"][used], 1, size)[0, 0]
        assert float(tiled.max()) <= 1.0 + 1e-5  # quadrants never overlap
        for x1, y1, x2, y2 in item["boxes"].round().int().tolist():
            if (x2 - x1) >= 4 and (y2 - y1) >= 4:
                assert float(tiled[y1 + 1:y2 - 1, x1 + 1:x2 - 1].mean()) > 0.9
                checked += 1
        assert (item["boxes"] >= 0).all() and (item["boxes"] <= size).all()
    assert checked >= 5


def test_closed_mosaic_gives_the_plain_augmentation(tiny_dataset: Path):
    from training.data import load_dataset

    ds = load_dataset(tiny_dataset)
    data = DetectionDataset(ds.records, 96, AugmentConfig(mosaic=1.0), seed=2, with_affine=True)
    plain = DetectionDataset(ds.records, 96, AugmentConfig(), seed=2, with_affine=True)
    data.set_epoch(3, mosaic=False)
    plain.set_epoch(3)
    for index in range(3):
        a, b = data[index], plain[index]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
        assert a["tile_index"].tolist() == [index, -1, -1, -1]
    data.set_epoch(3, mosaic=True)
    assert (data[0]["tile_index"] >= 0).sum() == 4
