"""Model packages: a folder with ``metadata.json``, the model files (each listed with its size and sha256) and,
when signed, ``signature.json``.

The package is the only thing that passes from training to the line, and nothing in it is ever executed or
unpickled: the SDK reads OpenVINO IR and ONNX graphs only. :func:`load_package` refuses, with
:class:`PackageError`, a package whose metadata breaks the schema (:mod:`diffdefect_edge.metadata`), that names
a path outside the package, a link or a special file, or whose files do not match their checksums; with
``trusted_keys`` also one that is unsigned or signed by another key (:mod:`diffdefect_edge.signing`). Errors
name the package-relative path and never describe anything outside the package. :func:`write_package` builds a
package in a temporary sibling folder and renames it into place, so a reader never sees half a package.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffdefect_edge.metadata import (
    FORMAT_VERSION,
    PACKAGE_FORMAT,
    MetadataError,
    ModelInput,
    PackageMetadata,
    parse_metadata,
)

__all__ = ["FORMAT_VERSION", "METADATA_FILE", "PACKAGE_FORMAT", "SIGNATURE_FILE", "ModelFile", "ModelPackage",
           "PackageError", "load_package", "read_package_file", "sha256_file", "update_metadata", "write_package"]

METADATA_FILE = "metadata.json"
SIGNATURE_FILE = "signature.json"


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


def read_package_file(root: Path, rel: str) -> bytes:
    """The bytes of package-relative ``rel``: every component must be a real folder or regular file inside
    ``root`` (a link or a special file is refused without being followed or opened)."""
    current = root
    parts = rel.split("/")
    for i, part in enumerate(parts):
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            raise PackageError(root, f"{rel}: listed in the package but missing") from None
        except OSError as exc:
            raise PackageError(root, f"{rel}: cannot be read ({exc.strerror})") from None
        if stat.S_ISLNK(st.st_mode):
            raise PackageError(root, f"{'/'.join(parts[:i + 1])}: is a symbolic link; packages hold only regular "
                                     "files")
        last = i == len(parts) - 1
        if not last and not stat.S_ISDIR(st.st_mode):
            raise PackageError(root, f"{'/'.join(parts[:i + 1])}: is not a folder")
        if last and not stat.S_ISREG(st.st_mode):
            raise PackageError(root, f"{rel}: is not a regular file")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(current, flags)
    except OSError as exc:
        raise PackageError(root, f"{rel}: cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped after the check
            raise PackageError(root, f"{rel}: is not a regular file")
        return f.read()


@dataclass(frozen=True)
class ModelFile:
    """One runnable model in a package: which backend and precision, and the files it needs."""

    backend: str  # "openvino" or "onnx"
    precision: str  # "fp32", "fp16" or "int8"
    path: Path
    spec: ModelInput  # dtype, layout, color order the file takes
    runtime_steps: tuple[str, ...]  # what the runtime must do before feeding it
    rel: str = ""  # package-relative file
    extra: tuple[str, ...] = ()  # package-relative extra files (an IR's weights)

    @property
    def input(self) -> dict[str, Any]:
        return self.spec.model_dump()


@dataclass(frozen=True)
class ModelPackage:
    path: Path
    meta: PackageMetadata  # the typed view every reader uses
    metadata: dict[str, Any]  # metadata.json as written (for display and provenance)
    signed_by: str | None = None  # the trusted key's id, when loaded with trusted keys

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
        return self.meta.defaults.model_dump()

    @property
    def models(self) -> list[ModelFile]:
        return [ModelFile(m.backend, m.precision, self.path / m.file, m.input, m.runtime_steps, m.file,
                          m.extra_files) for m in self.meta.models]

    def model_file(self, backend: str, precision: str) -> ModelFile:
        for m in self.models:
            if m.backend == backend and m.precision == precision:
                return m
        have = ", ".join(f"{m.backend}/{m.precision}" for m in self.models)
        raise PackageError(self.path, f"has no {backend} model in {precision} (it has: {have})")

    def read_verified(self, rel: str) -> bytes:
        """A listed file's bytes, checked against its size and sha256 (what a backend loads is what was verified)."""
        entry = self.meta.files.get(rel)
        if entry is None:
            raise PackageError(self.path, f"{rel}: not listed in the package")
        data = read_package_file(self.path, rel)
        if len(data) != entry.bytes:
            raise PackageError(self.path, f"{rel}: is {len(data)} bytes, the package says {entry.bytes} "
                                          "(truncated or replaced)")
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise PackageError(self.path, f"{rel}: sha256 does not match the package metadata (corrupt or "
                                          "tampered)")
        return data


def _parse(path: Path, data: bytes) -> tuple[PackageMetadata, dict[str, Any]]:
    """metadata.json's bytes -> (typed, as written); any problem is a PackageError naming the field."""
    try:
        return parse_metadata(data)
    except MetadataError as exc:
        raise PackageError(path / METADATA_FILE, f"metadata {exc}" if exc.field else str(exc)) from None


def load_package(path: str | Path, verify: bool = True, trusted_keys: Sequence[str | Path | bytes] | None = None
                 ) -> ModelPackage:
    """Read and validate a package; with ``verify`` check every listed file's size and sha256; with
    ``trusted_keys`` (PEM public keys: paths or bytes) require a signature by one of them."""
    path = Path(path)
    if not path.is_dir():
        raise PackageError(path, "no such package directory")
    if not (path / METADATA_FILE).exists() and not (path / METADATA_FILE).is_symlink():
        raise PackageError(path, f"not a model package (no {METADATA_FILE})")
    meta_bytes = read_package_file(path, METADATA_FILE)
    signed_by = None
    if trusted_keys is not None:
        from diffdefect_edge.signing import verify_signature

        signed_by = verify_signature(path, meta_bytes, trusted_keys)
    typed, raw = _parse(path, meta_bytes)
    package = ModelPackage(path, typed, raw, signed_by)
    if verify:
        for rel in typed.files:
            package.read_verified(rel)
    return package


def write_package(out_dir: str | Path, files: dict[str, Path], metadata: dict[str, Any],
                  overwrite: bool = False, sign_key: str | Path | None = None) -> ModelPackage:
    """Copy ``files`` (package-relative name -> source) and write metadata with their checksums, atomically;
    sign it with the PEM private key ``sign_key`` when given.

    An existing ``out_dir`` is refused unless ``overwrite``; it is only replaced once the new package is complete.
    """
    from diffdefect_edge import __version__

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
        meta = {"format": PACKAGE_FORMAT, "format_version": FORMAT_VERSION,
                "created_by": f"diffdefect-edge {__version__}", **metadata, "files": listed}
        try:
            text = json.dumps(meta, indent=1, allow_nan=False)
        except ValueError as exc:
            raise ValueError(f"{out_dir}: package metadata must be strict JSON ({exc})") from None
        (tmp / METADATA_FILE).write_text(text)
        checked = load_package(tmp)  # a package that would not load is never put in place
        if sign_key is not None:
            from diffdefect_edge.signing import sign_package

            sign_package(tmp, sign_key)
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
    return dataclasses.replace(checked, path=out_dir)  # the same files, moved by one rename


def update_metadata(path: str | Path, changes: dict[str, Any], sign_key: str | Path | None = None) -> ModelPackage:
    """Replace top-level metadata fields of an existing package (validated first, written atomically).

    A signed package stays signed only with ``sign_key``: without it the change is refused, so that a package
    is never silently left unsigned."""
    path = Path(path)
    package = load_package(path)
    signed = (path / SIGNATURE_FILE).exists()
    if signed and sign_key is None:
        raise PackageError(path, "is signed: pass the signing key to renew the signature after this change")
    data = json.dumps({**package.metadata, **changes}, indent=1, allow_nan=False).encode()
    _parse(path, data)  # a change that would not load is never written
    tmp = path / f".{METADATA_FILE}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path / METADATA_FILE)
    if sign_key is not None:
        from diffdefect_edge.signing import sign_package

        sign_package(path, sign_key)
    return load_package(path)
