"""Records -> letterboxed training batches for torch (the same letterbox rule the SDK applies at the line)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from diffdefect_edge.preprocess import letterbox
from training.data.augment import AugmentConfig, augment_with_matrix
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


class DetectionDataset(TorchDataset):
    """Item = dict(image uint8 (S, S, 3) BGR canvas, boxes (N, 4) canvas px, labels (N,), mask (S, S) or None).

    ``augment=None`` gives the evaluation view. ``cache=True`` keeps decoded images in memory.
    ``with_affine=True`` adds ``affine`` (2, 3): the map from the un-augmented canvas to this item's canvas (pixel
    coordinates), which the teacher applies to the image's stored DDPM feature maps.
    """

    def __init__(self, records: list[Record], input_size: int, augment: AugmentConfig | None = None,
                 with_masks: bool = False, cache: bool = False, seed: int = 0, with_affine: bool = False) -> None:
        self.records, self.input_size, self.augment = records, input_size, augment
        self.with_masks, self.cache, self.seed, self.with_affine = with_masks, cache, seed, with_affine
        self._cache: dict[int, np.ndarray] = {}
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, index: int) -> np.ndarray:
        if index in self._cache:
            return self._cache[index]
        image = read_image(str(self.records[index].image_path))
        if self.cache:
            self._cache[index] = image
        return image

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index]
        image = self._image(index)
        boxes, labels = rec.boxes.copy(), rec.class_ids.copy()
        mask = read_mask(rec) if self.with_masks else None
        matrix = np.eye(3)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self._epoch, index])
            image, boxes, labels, mask, matrix = augment_with_matrix(image, boxes, labels, mask, self.augment, rng)
        canvas, lb = letterbox(image, self.input_size)
        out = {"image": torch.from_numpy(canvas), "boxes": torch.from_numpy(lb.boxes_to_canvas(boxes)),
               "labels": torch.from_numpy(labels.astype(np.int64)), "index": index}
        if self.with_affine:  # canvas = L frame, augmented frame = A frame (same size) -> canvas' = L A L^-1 canvas
            place = np.array([[lb.scale, 0, lb.pad_x], [0, lb.scale, lb.pad_y], [0, 0, 1]])
            out["affine"] = torch.from_numpy((place @ matrix @ np.linalg.inv(place))[:2].astype(np.float32))
        if self.with_masks:
            if mask is None:
                out["mask"] = torch.full((self.input_size, self.input_size), SEG_IGNORE, dtype=torch.uint8)
            else:
                m, _ = letterbox(mask, self.input_size, pad_value=0, interpolation=cv2.INTER_NEAREST)
                out["mask"] = torch.from_numpy(m)
        return out


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
    if "affine" in items[0]:
        batch["affine"] = torch.stack([it["affine"] for it in items])
    return batch


def to_model_input(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(B, S, S, 3) BGR uint8 canvases -> (B, 3, S, S) float RGB normalised, as the exported graph does."""
    x = images.flip(-1).permute(0, 3, 1, 2).float()
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
