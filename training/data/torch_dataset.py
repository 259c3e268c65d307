"""Records -> letterboxed training batches for torch (the same letterbox rule the SDK applies at the line)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from diffdefect_edge.preprocess import letterbox
from training.data.augment import AugmentConfig, augment_with_matrix
from training.data.mosaic import TilePlacement, mosaic
from training.data.records import DatasetError, Record
from training.detector.loss import SEG_IGNORE


def read_image(path: str) -> np.ndarray:
    """BGR uint8 (H, W, 3); gray files are expanded to three channels."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(path, "could not be decoded as an image")
    return image


def read_mask(record: Record) -> np.ndarray | None:
    if record.mask_path is None:
        return None
    mask = cv2.imread(str(record.mask_path), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2:
        raise DatasetError(record.mask_path, "mask must be a single-channel class-index PNG")
    if mask.shape != (record.height, record.width):
        raise DatasetError(record.mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]}, image is "
                                             f"{record.width}x{record.height}")
    return mask


MAX_TILES = 4


class DetectionDataset(TorchDataset):
    """Item = dict(image uint8 (S, S, 3) BGR canvas, boxes (N, 4) canvas px, labels (N,), mask (S, S) or None).

    ``augment=None`` gives the evaluation view. ``cache=True`` keeps decoded images in memory. With
    ``augment.mosaic > 0`` an item is, with that probability, a mosaic of its image and three others drawn at
    random (off for the epochs :meth:`set_epoch` closes it for).
    ``with_affine=True`` adds where the item's source canvases went, so the teacher can move each image's stored
    DDPM feature maps the same way: ``tile_index`` (4,) the records used (-1: unused slot), ``tile_affine``
    (4, 2, 3) the map from each un-augmented canvas to this item's canvas (pixels), ``tile_region`` (4, 4) the
    part of this item's canvas each fills (x0, y0, x1, y1).
    """

    def __init__(self, records: list[Record], input_size: int, augment: AugmentConfig | None = None,
                 with_masks: bool = False, cache: bool = False, seed: int = 0, with_affine: bool = False) -> None:
        self.records, self.input_size, self.augment = records, input_size, augment
        self.with_masks, self.cache, self.seed, self.with_affine = with_masks, cache, seed, with_affine
        self._cache: dict[int, np.ndarray] = {}
        self._epoch = 0
        self._mosaic_open = True

    def set_epoch(self, epoch: int, mosaic: bool = True) -> None:
        """The epoch seeds the augmentation; ``mosaic=False`` closes mosaic for it."""
        self._epoch, self._mosaic_open = epoch, mosaic

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, index: int) -> np.ndarray:
        if index in self._cache:
            return self._cache[index]
        image = read_image(str(self.records[index].image_path))
        if self.cache:
            self._cache[index] = image
        return image

    def _canvas_mask(self, mask: np.ndarray | None) -> np.ndarray | None:
        """A frame's class-index mask letterboxed like its image (nearest class, background padding)."""
        if mask is None:
            return None
        return letterbox(mask, self.input_size, pad_value=0, interpolation=cv2.INTER_NEAREST)[0]

    def _canvas(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """The record letterboxed to the canvas, with canvas boxes, labels and mask (the mosaic's tiles)."""
        rec = self.records[index]
        canvas, lb = letterbox(self._image(index), self.input_size)
        mask = self._canvas_mask(read_mask(rec) if self.with_masks else None)
        return canvas, lb.boxes_to_canvas(rec.boxes.copy()), rec.class_ids.copy(), mask

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self._epoch, index])
        aug = self.augment
        size = self.input_size
        if aug is not None and aug.mosaic > 0 and self._mosaic_open and rng.random() < aug.mosaic:
            sources = [index, *(int(i) for i in rng.integers(0, len(self), MAX_TILES - 1))]
            canvas, boxes, labels, mask, placements = mosaic([self._canvas(i) for i in sources], rng,
                                                             aug.min_box_visibility, mask_ignore=SEG_IGNORE)
            canvas, boxes, labels, mask, matrix = augment_with_matrix(canvas, boxes, labels, mask, aug, rng)
            tiles = [(i, TilePlacement(matrix @ p.affine, _move_region(matrix, p.region, size)))
                     for i, p in zip(sources, placements)]
        else:
            rec = self.records[index]
            image, boxes, labels = self._image(index), rec.boxes.copy(), rec.class_ids.copy()
            mask = read_mask(rec) if self.with_masks else None
            matrix = np.eye(3)
            if aug is not None:
                image, boxes, labels, mask, matrix = augment_with_matrix(image, boxes, labels, mask, aug, rng)
            canvas, lb = letterbox(image, size)
            boxes, mask = lb.boxes_to_canvas(boxes), self._canvas_mask(mask)
            # canvas = L frame, augmented frame = A frame (same size) -> canvas' = L A L^-1 canvas
            place = np.array([[lb.scale, 0, lb.pad_x], [0, lb.scale, lb.pad_y], [0, 0, 1]])
            tiles = [(index, TilePlacement(place @ matrix @ np.linalg.inv(place), (0.0, 0.0, size, size)))]
        out = {"image": torch.from_numpy(canvas), "boxes": torch.from_numpy(np.asarray(boxes, np.float32)),
               "labels": torch.from_numpy(labels.astype(np.int64)), "index": index}
        if self.with_affine:
            out.update(_tile_tensors(tiles))
        if self.with_masks:
            out["mask"] = (torch.full((size, size), SEG_IGNORE, dtype=torch.uint8) if mask is None
                           else torch.from_numpy(mask))
        return out


def _move_region(matrix: np.ndarray, region: tuple[float, float, float, float], size: int
                 ) -> tuple[float, float, float, float]:
    """An axis-aligned region through a flip/zoom/shift matrix, clipped to the canvas."""
    x0, y0, x1, y1 = region
    corners = matrix @ np.array([[x0, x1], [y0, y1], [1.0, 1.0]])
    xs, ys = np.sort(corners[0].clip(0, size)), np.sort(corners[1].clip(0, size))
    return float(xs[0]), float(ys[0]), float(xs[1]), float(ys[1])


def _tile_tensors(tiles: list[tuple[int, TilePlacement]]) -> dict[str, torch.Tensor]:
    index = torch.full((MAX_TILES,), -1, dtype=torch.long)
    affine = torch.zeros(MAX_TILES, 2, 3)
    region = torch.zeros(MAX_TILES, 4)
    for slot, (i, placement) in enumerate(tiles):
        index[slot] = i
        affine[slot] = torch.from_numpy(placement.affine[:2].astype(np.float32))
        region[slot] = torch.tensor(placement.region)
    return {"tile_index": index, "tile_affine": affine, "tile_region": region}


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Stack images; pad boxes/labels to the batch's largest count with a ``valid`` mask."""
    g = max(1, max(len(it["labels"]) for it in items))
    b = len(items)
    boxes = torch.zeros(b, g, 4)
    labels = torch.zeros(b, g, dtype=torch.long)
    valid = torch.zeros(b, g, dtype=torch.bool)
    for i, it in enumerate(items):
        n = len(it["labels"])
        boxes[i, :n], labels[i, :n], valid[i, :n] = it["boxes"], it["labels"], True
    batch = {"images": torch.stack([it["image"] for it in items]), "boxes": boxes, "labels": labels,
             "valid": valid, "index": torch.tensor([it["index"] for it in items])}
    if "mask" in items[0]:
        batch["masks"] = torch.stack([it["mask"] for it in items])
    for key in ("tile_index", "tile_affine", "tile_region"):
        if key in items[0]:
            batch[key] = torch.stack([it[key] for it in items])
    return batch


def to_model_input(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(B, S, S, 3) BGR uint8 canvases -> (B, 3, S, S) float RGB normalised, as the exported graph does."""
    x = images.flip(-1).permute(0, 3, 1, 2).float()
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
