"""Deterministic stratified train/val split of any dataset."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from training.data.records import Dataset, Record


def _stratum(rec: Record) -> int:
    """The image's dominant class (most boxes, lowest id on ties); -1 for a defect-free image."""
    if rec.num_boxes == 0:
        return -1
    return int(np.bincount(rec.class_ids).argmax())


def split_dataset(dataset: Dataset, val_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split into (train, val) so each stratum (dominant class, or background) keeps ``val_fraction``.

    Deterministic for a seed and independent of record order (strata are shuffled by sorted image id).
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    strata: dict[int, list[int]] = defaultdict(list)
    for i, rec in enumerate(dataset.records):
        strata[_stratum(rec)].append(i)
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for key in sorted(strata):
        members = sorted(strata[key], key=lambda i: dataset.records[i].image_id)
        order = rng.permutation(len(members))
        n_val = int(round(val_fraction * len(members)))
        if len(members) > 1:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.extend(members[j] for j in order[:n_val])
    val_set = set(val)
    train = [i for i in range(len(dataset)) if i not in val_set]
    return dataset.subset(train), dataset.subset(sorted(val_set))
