"""Model packages: a directory with ``metadata.json`` and the model files, each listed with its sha256.

The package is the only thing that passes from training to the line. :func:`write_package` builds it in a
temporary sibling directory and renames it into place, so a reader never sees half a package;
:func:`load_package` refuses a missing, corrupt, tampered or unknown-version package with :class:`PackageError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffdefect_edge.metadata import MetadataError, ModelInput, PackageMetadata, parse_metadata

PACKAGE_FORMAT = "diffdefect-edge-package"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"


class PackageError(ValueError):
    """The package at ``path`` cannot be used; the message says why."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelFile:
    """One runnable model in a package: which backend and precision, and the files it needs."""

    backend: str  # "openvino", "onnx" or "torch"
    precision: str  # "fp32", "fp16" or "int8"
    path: Path
    spec: ModelInput  # dtype, layout, color order the file takes
    runtime_steps: tuple[str, ...]  # what the runtime must do before feeding it

    @property
    def input(self) -> dict[str, Any]:
        return dataclasses.asdict(self.spec)


@dataclass(frozen=True)
class ModelPackage:
    path: Path
    meta: PackageMetadata  # the typed view every reader uses

    @property
    def metadata(self) -> dict[str, Any]:
        """metadata.json as written (for display and provenance)."""
        return self.meta.raw

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.class_names)

    @property
    def input_size(self) -> int:
        return self.meta.input.size[0]

    @property
    def task(self) -> str:
        return self.meta.task

    @property
    def defaults(self) -> dict[str, Any]:
        return dataclasses.asdict(self.meta.defaults)

    @property
    def models(self) -> list[ModelFile]:
        return [ModelFile(m.backend, m.precision, self.path / m.file, m.input, m.runtime_steps)
                for m in self.meta.models]

    def model_file(self, backend: str, precision: str) -> ModelFile:
        for m in self.models:
            if m.backend == backend and m.precision == precision:
                return m
        have = ", ".join(f"{m.backend}/{m.precision}" for m in self.models)
        raise PackageError(self.path, f"has no {backend} model in {precision} (it has: {have})")


_REQUIRED_KEYS = ("format", "format_version", "class_names", "input", "output", "defaults", "models", "files", "task")


def load_package(path: str | Path, verify: bool = True) -> ModelPackage:
    """Read a package's metadata; with ``verify`` check every listed file's size and sha256."""
    path = Path(path)
    meta_path = path / METADATA_FILE
    if not path.is_dir():
        raise PackageError(path, "no such package directory")
    if not meta_path.is_file():
        raise PackageError(path, f"not a model package (no {METADATA_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackageError(meta_path, f"broken JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != PACKAGE_FORMAT:
        raise PackageError(meta_path, f"not a {PACKAGE_FORMAT} metadata file")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise PackageError(meta_path, f"package format version {version!r} is not supported by this SDK "
                                      f"(it reads version {FORMAT_VERSION}); re-export the model or upgrade")
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        raise PackageError(meta_path, f"metadata lacks {missing}")
    try:
        typed = parse_metadata(meta)
    except MetadataError as exc:
        raise PackageError(meta_path, f"metadata field {exc}") from None
    listed = typed.files
    for m in typed.models:
        for rel in [m.file, *m.extra_files]:
            if rel not in listed:
                raise PackageError(meta_path, f"model file {rel} is not listed with a checksum")
    if verify:
        for rel, info in listed.items():
            file = path / rel
            if not file.is_file():
                raise PackageError(file, "listed in the package but missing")
            size = file.stat().st_size
            if size != info.bytes:
                raise PackageError(file, f"is {size} bytes, the package says {info.bytes} (truncated or replaced)")
            if sha256_file(file) != info.sha256:
                raise PackageError(file, "sha256 does not match the package metadata (corrupt or tampered)")
    return ModelPackage(path, typed)


def write_package(out_dir: str | Path, files: dict[str, Path], metadata: dict[str, Any],
                  overwrite: bool = False) -> ModelPackage:
    """Copy ``files`` (package-relative name -> source) and write metadata with their checksums, atomically.

    An existing ``out_dir`` is refused unless ``overwrite``; it is only replaced once the new package is complete.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass overwrite to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)
        listed: dict[str, dict[str, Any]] = {}
        for rel, src in sorted(files.items()):
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            listed[rel] = {"sha256": sha256_file(dst), "bytes": dst.stat().st_size}
        meta = {"format": PACKAGE_FORMAT, "format_version": FORMAT_VERSION, **metadata, "files": listed}
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=1))
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_package(out_dir)
