"""A package's ``metadata.json`` read into one typed structure: the only place its fields are looked up.

:func:`parse_metadata` turns the JSON object into :class:`PackageMetadata`; a missing field or one of the wrong
type raises :class:`MetadataError` naming the field (``input.letterbox.pad_value``) and the value found.
The package loader turns that into a :class:`~diffdefect_edge.package.PackageError` naming the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class MetadataError(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}")


def _get(obj: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    field = f"{where}.{key}" if where else key
    if key not in obj:
        if default is not ...:
            return default
        raise MetadataError(field, "missing")
    value = obj[key]
    # bool is an int to Python; a JSON true is never a count, a size or a threshold
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        names = " or ".join(k.__name__ for k in _as_tuple(kind))
        raise MetadataError(field, f"must be {names}, got {value!r:.80}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _obj(obj: dict[str, Any], key: str, where: str) -> tuple[dict[str, Any], str]:
    return _get(obj, key, where, dict), f"{where}.{key}" if where else key


def _list_of(obj: dict[str, Any], key: str, where: str, item: Callable[[Any, str], T], default: Any = ...) -> list[T]:
    values = _get(obj, key, where, list, default)
    field = f"{where}.{key}" if where else key
    return [item(v, f"{field}[{i}]") for i, v in enumerate(values)]


def _typed(kind: type | tuple[type, ...]) -> Callable[[Any, str], Any]:
    def check(value: Any, field: str) -> Any:
        if not isinstance(value, kind) or isinstance(value, bool):
            names = " or ".join(k.__name__ for k in _as_tuple(kind))
            raise MetadataError(field, f"must be {names}, got {value!r:.80}")
        return value
    return check


_number = (int, float)


@dataclass(frozen=True)
class Letterbox:
    pad_value: int
    interpolation: str
    rule: str


@dataclass(frozen=True)
class InputSpec:
    size: tuple[int, int]
    color_order: str
    layout: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    letterbox: Letterbox


@dataclass(frozen=True)
class Defaults:
    conf: float
    iou: float
    max_det: int


@dataclass(frozen=True)
class ModelInput:
    """What one model file takes: ``dtype`` uint8 (letterboxed BGR NHWC as is) or float32 (normalised NCHW)."""

    dtype: str
    layout: str
    color_order: str
    normalized: bool


@dataclass(frozen=True)
class ModelEntry:
    backend: str  # "openvino", "onnx" or "torch"
    precision: str  # "fp32", "fp16" or "int8"
    file: str  # package-relative
    extra_files: tuple[str, ...]
    input: ModelInput
    runtime_steps: tuple[str, ...]


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ModelInfo:
    name: str
    architecture: str
    size: str
    parameters: int
    gflops: float


@dataclass(frozen=True)
class PackageMetadata:
    format: str
    format_version: int
    task: str
    model: ModelInfo
    class_names: tuple[str, ...]
    input: InputSpec
    output: dict[str, Any]  # documentation of the output tensors; the decoder reads the tensors' shapes
    defaults: Defaults
    models: tuple[ModelEntry, ...]
    files: dict[str, FileEntry]
    provenance: dict[str, Any]
    raw: dict[str, Any]  # the JSON object as read, for ``diffdefect-edge info --json``


def _model_entry(value: Any, field: str) -> ModelEntry:
    if not isinstance(value, dict):
        raise MetadataError(field, f"must be an object, got {value!r:.80}")
    inp, inp_field = _obj(value, "input", field)
    return ModelEntry(
        backend=_get(value, "backend", field, str), precision=_get(value, "precision", field, str),
        file=_get(value, "file", field, str),
        extra_files=tuple(_list_of(value, "extra_files", field, _typed(str), default=[])),
        input=ModelInput(dtype=_get(inp, "dtype", inp_field, str), layout=_get(inp, "layout", inp_field, str),
                         color_order=_get(inp, "color_order", inp_field, str),
                         normalized=_get(inp, "normalized", inp_field, bool)),
        runtime_steps=tuple(_list_of(value, "runtime_steps", field, _typed(str))))


def _file_entry(value: Any, field: str) -> FileEntry:
    if not isinstance(value, dict):
        raise MetadataError(field, f"must be an object, got {value!r:.80}")
    return FileEntry(sha256=_get(value, "sha256", field, str), bytes=_get(value, "bytes", field, int))


def parse_metadata(meta: Any) -> PackageMetadata:
    """The typed view of a metadata JSON object; :class:`MetadataError` names the first bad field."""
    if not isinstance(meta, dict):
        raise MetadataError("metadata", f"must be a JSON object, got {type(meta).__name__}")
    inp, inp_field = _obj(meta, "input", "")
    lb, lb_field = _obj(inp, "letterbox", inp_field)
    size = _list_of(inp, "size", inp_field, _typed(int))
    if len(size) != 2:
        raise MetadataError("input.size", f"must be [height, width], got {size!r}")
    defaults, d_field = _obj(meta, "defaults", "")
    model, m_field = _obj(meta, "model", "")
    files = _get(meta, "files", "", dict)
    return PackageMetadata(
        format=_get(meta, "format", "", str), format_version=_get(meta, "format_version", "", int),
        task=_get(meta, "task", "", str),
        model=ModelInfo(name=_get(model, "name", m_field, str), architecture=_get(model, "architecture", m_field, str),
                        size=_get(model, "size", m_field, str), parameters=_get(model, "parameters", m_field, int),
                        gflops=float(_get(model, "gflops", m_field, _number))),
        class_names=tuple(_list_of(meta, "class_names", "", _typed(str))),
        input=InputSpec(size=(size[0], size[1]), color_order=_get(inp, "color_order", inp_field, str),
                        layout=_get(inp, "layout", inp_field, str),
                        mean=tuple(float(v) for v in _list_of(inp, "mean", inp_field, _typed(_number))),
                        std=tuple(float(v) for v in _list_of(inp, "std", inp_field, _typed(_number))),
                        letterbox=Letterbox(pad_value=_get(lb, "pad_value", lb_field, int),
                                            interpolation=_get(lb, "interpolation", lb_field, str, "bilinear"),
                                            rule=_get(lb, "rule", lb_field, str, ""))),
        output=_get(meta, "output", "", dict),
        defaults=Defaults(conf=float(_get(defaults, "conf", d_field, _number)),
                          iou=float(_get(defaults, "iou", d_field, _number)),
                          max_det=_get(defaults, "max_det", d_field, int, 300)),
        models=tuple(_list_of(meta, "models", "", _model_entry)),
        files={name: _file_entry(v, f"files[{name!r}]") for name, v in files.items()},
        provenance=_get(meta, "provenance", "", dict, {}),
        raw=meta)
