"""Experiment configuration: YAML files parsed into dataclasses (unknown keys are errors)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


@dataclass
class SyntheticDataConfig:
    num_images: int = 240
    size: int = 200
    contrast: tuple[float, float] = (0.15, 1.0)
    max_defects: int = 3
    background_fraction: float = 0.1


@dataclass
class DataConfig:
    source: str = "synthetic"  # "synthetic" or a dataset path (VOC/COCO/YOLO/Tianchi)
    format: str = "auto"
    class_names: list[str] | None = None
    on_error: str = "raise"  # or "skip" (reported)
    val_fraction: float = 0.2
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, *sections: str, extra: dict[str, Any] | None = None) -> str:
        """Stable hash of the named sections, the seed and ``extra``: a stage reruns only when these change."""
        payload = {"seed": self.seed, "extra": extra or {},
                   **{s: dataclasses.asdict(getattr(self, s)) for s in sections}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} (known: {sorted(names)})")
    kwargs = {}
    for key, val in values.items():
        kwargs[key] = _coerce(hints[key], val, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(tp: Any, val: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, val, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if val is None else _coerce(args[0], val, where)
    if origin is tuple:
        if not isinstance(val, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {val!r}")
        return tuple(_coerce(a, v, where) for a, v in zip(typing.get_args(tp), val))
    if origin is list:
        if not isinstance(val, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {val!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, where) for v in val]
    if tp is float and isinstance(val, (int, float)) and not isinstance(val, bool):
        return float(val)
    if tp in (int, str, bool) and not isinstance(val, tp) or (tp is int and isinstance(val, bool)):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {val!r}")
    return val


def config_from_dict(values: dict[str, Any], where: str = "config") -> ExperimentConfig:
    return _build(ExperimentConfig, values or {}, where)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a YAML experiment config; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: broken YAML ({exc})") from None
    return config_from_dict(values, where=str(path))


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(json.loads(json.dumps(config.to_dict())), sort_keys=False))
