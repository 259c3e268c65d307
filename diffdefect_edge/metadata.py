"""The schema of a package's ``metadata.json``: one typed structure, validated in one place (pydantic).

Every field has its type and range; the cross-field rules (class count = the model's output classes, model
files listed with a checksum, paths inside the package) are validators here. :func:`parse_metadata` reads the
file's bytes: size and nesting are bounded before parsing, NaN / Infinity and duplicate keys are refused, an
older format version is migrated, a newer one refused with the version of diffdefect-edge that reads it.
Every problem raises :class:`MetadataError` naming the field and the value.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

PACKAGE_FORMAT = "diffdefect-edge-package"
FORMAT_VERSION = 2
# the diffdefect-edge release that first wrote each format version
FORMAT_INTRODUCED_BY = {1: "0.1.0", 2: "0.2.0"}
MAX_METADATA_BYTES = 1 << 20
MAX_NESTING = 32


class MetadataError(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}" if field else problem)


def _relative_path(value: str) -> str:
    """A package-relative POSIX path: not absolute, normalised, no '..', no empty or '.' component."""
    if not value or len(value) > 255 or "\0" in value or "\\" in value or ":" in value:
        raise ValueError("must be a relative POSIX path inside the package")
    if value.startswith("/") or posixpath.normpath(value) != value or value.startswith(".."):
        raise ValueError("must be a normalised path inside the package (no leading '/', '.' or '..')")
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise ValueError("must not contain '.' or '..' components")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be finite")
    return value


RelPath = Annotated[str, AfterValidator(_relative_path)]
Finite = Annotated[float, AfterValidator(_finite)]
Name = Annotated[str, Field(min_length=1, max_length=100)]
Text = Annotated[str, Field(max_length=2000)]


class _Strict(BaseModel):
    # strict: no coercion (true is not 1, "114" is not 114); forbid: a key this SDK does not know is an error
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class Letterbox(_Strict):
    pad_value: int = Field(ge=0, le=255)
    interpolation: Literal["bilinear"] = "bilinear"
    rule: Text = ""


class InputSpec(_Strict):
    size: tuple[Annotated[int, Field(ge=32, le=8192)], Annotated[int, Field(ge=32, le=8192)]]
    color_order: Literal["RGB", "BGR"]
    layout: Literal["NCHW", "NHWC"]
    mean: tuple[Finite, Finite, Finite]
    std: tuple[Annotated[Finite, Field(gt=0)], Annotated[Finite, Field(gt=0)], Annotated[Finite, Field(gt=0)]]
    letterbox: Letterbox

    @model_validator(mode="after")
    def _square(self) -> InputSpec:
        if self.size[0] != self.size[1]:
            raise ValueError(f"size must be square (the letterbox canvas), got {list(self.size)}")
        return self


class Defaults(_Strict):
    conf: Finite = Field(gt=0, le=1)
    iou: Finite = Field(gt=0, le=1)
    max_det: int = Field(default=300, ge=1, le=100_000)
    masks: bool = False  # compute instance masks unless the caller says otherwise


class ModelInput(_Strict):
    """What one model file takes: uint8 letterboxed BGR NHWC canvases as they are, or normalised float NCHW."""

    dtype: Literal["uint8", "float32"]
    layout: Literal["NHWC", "NCHW"]
    color_order: Literal["BGR", "RGB"]
    normalized: bool


class ModelEntry(_Strict):
    backend: Literal["openvino", "onnx"]
    precision: Literal["fp32", "fp16", "int8"]
    file: RelPath
    extra_files: tuple[RelPath, ...] = Field(default=(), max_length=16)
    input: ModelInput
    runtime_steps: tuple[Literal["letterbox", "bgr_to_rgb", "normalize", "hwc_to_chw"], ...]


class FileEntry(_Strict):
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: int = Field(ge=0, le=1 << 40)


class ModelInfo(_Strict):
    name: Name
    architecture: Name
    size: Name
    parameters: int = Field(ge=0)
    gflops: Finite = Field(ge=0)
    reg_max: int | None = Field(default=None, ge=1, le=64)


class TensorSpec(BaseModel):
    """A documented output tensor: its name and shape ("N" for the batch); other keys describe it in words."""

    model_config = ConfigDict(strict=True, frozen=True, extra="allow")
    name: Name
    shape: tuple[int | Literal["N"], ...] = Field(min_length=2, max_length=4)


class OutputSpec(_Strict):
    detections: TensorSpec
    segmentation: TensorSpec | None = None
    strides: tuple[int, ...] = Field(min_length=1, max_length=5)
    num_anchors: int = Field(ge=1)
    decode: Text = ""


class Calibration(_Strict):
    """Per-class decision thresholds for OK / NG, picked on a labelled set (``python -m training calibrate``)."""

    thresholds: dict[Name, Annotated[Finite, Field(gt=0, le=1)]]
    rule: Literal["target_recall", "max_false_alarm"]
    target: Finite = Field(gt=0, le=1)
    images: int = Field(ge=1)
    defect_free_images: int = Field(ge=0)
    dataset: Text = ""


class PackageMetadata(_Strict):
    format: Literal["diffdefect-edge-package"]
    format_version: Literal[2]
    created_by: Annotated[str, Field(pattern=r"^diffdefect-edge \d+\.\d+\.\d+\S*$")]
    task: Literal["detect", "detect+seg"]
    model: ModelInfo
    class_names: tuple[Name, ...] = Field(min_length=1, max_length=1000)
    input: InputSpec
    output: OutputSpec
    defaults: Defaults
    models: tuple[ModelEntry, ...] = Field(min_length=1, max_length=16)
    files: dict[RelPath, FileEntry] = Field(max_length=256)
    provenance: dict[str, Any] = Field(default_factory=dict)
    calibration: Calibration | None = None
    sample_image: RelPath | None = None  # a real frame for benchmarks (diffdefect-edge bench)

    @model_validator(mode="after")
    def _consistent(self) -> PackageMetadata:
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be unique, got {list(self.class_names)}")
        shape = self.output.detections.shape
        classes = shape[-1]
        if not isinstance(classes, int) or classes - 4 != len(self.class_names):
            raise ValueError(f"output.detections.shape {list(shape)} has {classes} - 4 classes but class_names lists "
                             f"{len(self.class_names)}")
        if len(shape) != 3 or shape[1] != self.output.num_anchors:
            raise ValueError(f"output.detections.shape {list(shape)} must be [N, num_anchors "
                             f"({self.output.num_anchors}), 4 + classes]")
        if (self.task == "detect+seg") != (self.output.segmentation is not None):
            raise ValueError(f"task {self.task!r} does not match output.segmentation")
        if self.calibration is not None:
            unknown = set(self.calibration.thresholds) - set(self.class_names)
            if unknown:
                raise ValueError(f"calibration.thresholds names classes the model does not have: {sorted(unknown)}")
        if self.sample_image is not None and self.sample_image not in self.files:
            raise ValueError(f"sample_image {self.sample_image!r} is not listed in files with a checksum")
        for i, m in enumerate(self.models):
            for rel in (m.file, *m.extra_files):
                if rel not in self.files:
                    raise ValueError(f"models[{i}] file {rel!r} is not listed in files with a checksum")
        return self


def _nesting(text: str) -> int:
    """The deepest nesting of JSON arrays and objects in ``text``, outside strings (no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MetadataError(key, "appears twice in one object")
        out[key] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise MetadataError("", f"{name} is not a JSON number")


def read_json(data: bytes) -> Any:
    """metadata.json's bytes -> the JSON value, with size, nesting, numbers and keys bounded."""
    if len(data) > MAX_METADATA_BYTES:
        raise MetadataError("", f"is {len(data)} bytes; metadata is at most {MAX_METADATA_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataError("", f"is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    depth = _nesting(text)
    if depth > MAX_NESTING:
        raise MetadataError("", f"nests {depth} levels deep; at most {MAX_NESTING}")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise MetadataError("", f"broken JSON ({exc})") from None
    except RecursionError:  # cannot happen under MAX_NESTING; kept so that nothing else ever escapes
        raise MetadataError("", "nests too deep") from None


def _migrate(meta: dict[str, Any]) -> dict[str, Any]:
    """Format 1 -> 2: format 1 packages carried a torch.export program, which the SDK no longer loads (it is a
    pickle: docs/sdk.md), and did not record which release wrote them."""
    meta = dict(meta)
    meta["models"] = [m for m in meta.get("models", []) if not (isinstance(m, dict) and m.get("backend") == "torch")]
    meta.setdefault("created_by", f"diffdefect-edge {FORMAT_INTRODUCED_BY[1]}")
    meta["format_version"] = 2
    return meta


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{str(part)!r:.60}]"
    return out or "metadata"


def validate_metadata(meta: Any) -> PackageMetadata:
    """A parsed JSON value -> :class:`PackageMetadata` (migrated when older); :class:`MetadataError` otherwise."""
    if not isinstance(meta, dict):
        raise MetadataError("metadata", f"must be a JSON object, got {type(meta).__name__}")
    if meta.get("format") != PACKAGE_FORMAT:
        raise MetadataError("format", f"must be {PACKAGE_FORMAT!r}, got {meta.get('format')!r:.60}: not a model "
                                      "package")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MetadataError("format_version", f"must be a positive integer, got {version!r:.60}")
    if version > FORMAT_VERSION:
        from diffdefect_edge import __version__

        writer = meta.get("created_by")
        who = f"written by {writer}" if isinstance(writer, str) and len(writer) < 80 else "newer"
        raise MetadataError("format_version", f"is {version} ({who}); this diffdefect-edge {__version__} reads "
                                              f"format versions up to {FORMAT_VERSION}: upgrade diffdefect-edge to "
                                              "the release that wrote the package")
    if version < FORMAT_VERSION:
        meta = _migrate(meta)
    try:  # JSON mode: strict types as JSON has them (an array is a tuple, true is no integer)
        return PackageMetadata.model_validate_json(json.dumps(meta))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        value = err.get("input")
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        raise MetadataError(_field(tuple(err["loc"])), f"{err['msg']} (got {shown:.80})") from None


def parse_metadata(data: bytes) -> tuple[PackageMetadata, dict[str, Any]]:
    """metadata.json's bytes -> (typed metadata, the JSON object as written)."""
    raw = read_json(data)
    return validate_metadata(raw), raw
