"""Checkpoints: weights in safetensors plus JSON metadata (spec, class names, config).

Never a pickled model object: a model is rebuilt from its spec and the weights loaded.
Training state (optimizer, epoch, raw weights) lives beside it in a ``torch.save`` of plain tensors and
numbers, read back with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file


class CheckpointError(ValueError):
    pass


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_weights(path: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``state`` (tensors) with ``meta`` (JSON-able) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    _atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)}))


def read_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})["meta"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a diffdefect-edge checkpoint (no metadata: {exc})") from None
    except Exception as exc:  # safetensors raises its own error types for a broken header
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None


def read_kind_meta(path: str | Path, kind: str, label: str) -> dict[str, Any]:
    """The metadata of a checkpoint that must be of ``kind`` (``"ddpm"``, ``"resvae"``, ``"teacher"``)."""
    meta = read_meta(path)
    if meta.get("kind") != kind:
        raise CheckpointError(f"{path}: not a {label} checkpoint")
    return meta


def load_strict(model: torch.nn.Module, path: str | Path, label: str) -> torch.nn.Module:
    """Load a checkpoint's weights into ``model`` (strict) and return it in eval mode."""
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the {label} spec ({exc})") from None
    return model.eval()


def save_train_state(path: str | Path, state: dict[str, Any]) -> None:
    path = Path(path)
    _atomic(path, lambda tmp: torch.save(state, tmp))


def load_train_state(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)
