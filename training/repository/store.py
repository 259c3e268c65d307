"""The feature repository: per-image arrays indexed by image id, in memory-mappable ``.npy`` files.

Layout of a repository directory::

    index.json        format version, image ids, per-array shape/dtype/sha256, provenance (config, checkpoints)
    <name>.npy        one array per name, row i = image ids[i] (e.g. ``features`` or ``latents``)

Writing (:class:`RepositoryWriter`) goes to ``<dir>.partial/`` in chunks; after each chunk is flushed its
progress is recorded, so a build killed mid-way resumes from the last whole chunk (when made by the same
``build_key``). Only a complete build is moved into place: the old repository is renamed aside, the new one
renamed in, the old one deleted. A crash therefore leaves the old repository, or a resumable partial, never a
half-written one under the final name (a crash between the two renames is repaired by the next open).

Reading (:class:`FeatureRepository`) parses only the index; arrays are opened lazily. ``read_rows`` reads just
the requested rows with positional file reads (``os.pread``), so iterating a repository keeps resident memory
flat whatever its size; ``array(name)`` gives the whole array as a read-only ``np.memmap``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
INDEX = "index.json"
PROGRESS = "progress.json"


class RepositoryError(ValueError):
    pass


def _sha256(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _npy_header_size(path: Path) -> int:
    with path.open("rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        read_header(f)  # advances past the header
        return f.tell()


def _recover(root: Path) -> None:
    """Finish a replacement interrupted between its two renames."""
    old = root.with_name(root.name + ".old")
    if not root.exists() and (old / INDEX).is_file():
        os.replace(old, root)
    elif root.exists() and old.exists():
        shutil.rmtree(old, ignore_errors=True)


class FeatureRepository:
    """Read side: ``repo.rows_of(ids)``, ``repo.read_rows(name, rows)``, ``repo.array(name)``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        _recover(self.root)
        index_path = self.root / INDEX
        if not index_path.is_file():
            partial = self.root.with_name(self.root.name + ".partial")
            hint = f" (an unfinished build is at {partial}; rerun the stage to resume it)" if partial.exists() else ""
            raise RepositoryError(f"{self.root}: no feature repository here (missing {INDEX}){hint}")
        try:
            self.index: dict[str, Any] = json.loads(index_path.read_text())
        except json.JSONDecodeError as exc:
            raise RepositoryError(f"{index_path}: broken index ({exc})") from None
        if self.index.get("format_version") != FORMAT_VERSION:
            raise RepositoryError(f"{index_path}: format version {self.index.get('format_version')!r} is not "
                                  f"supported (this code reads {FORMAT_VERSION})")
        self.ids: list[str] = list(self.index["ids"])
        self._row = {image_id: i for i, image_id in enumerate(self.ids)}
        self._offsets: dict[str, int] = {}
        for name, info in self.index["arrays"].items():  # headers and sizes only; the data is not read
            path = self.root / info["file"]
            data_bytes = int(np.prod(info["shape"])) * np.dtype(info["dtype"]).itemsize
            try:
                self._offsets[name] = _npy_header_size(path)
                complete = path.stat().st_size == self._offsets[name] + data_bytes
            except (OSError, ValueError):
                complete = False
            if not complete:
                raise RepositoryError(f"{path}: missing or truncated (expected a .npy with {data_bytes} bytes of data)")

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._row

    @property
    def names(self) -> list[str]:
        return list(self.index["arrays"])

    @property
    def meta(self) -> dict[str, Any]:
        return self.index.get("meta", {})

    def shape(self, name: str) -> tuple[int, ...]:
        """Per-row shape of array ``name``."""
        return tuple(self._info(name)["shape"][1:])

    def dtype(self, name: str) -> np.dtype:
        return np.dtype(self._info(name)["dtype"])

    def _info(self, name: str) -> dict[str, Any]:
        if name not in self.index["arrays"]:
            raise KeyError(f"{self.root}: no array {name!r} (arrays: {self.names})")
        return self.index["arrays"][name]

    def rows_of(self, image_ids: Sequence[str]) -> list[int]:
        missing = [i for i in image_ids if i not in self._row]
        if missing:
            raise KeyError(f"{self.root}: image id(s) not in the repository: {missing[:5]}")
        return [self._row[i] for i in image_ids]

    def array(self, name: str) -> np.memmap:
        info = self._info(name)
        return np.load(self.root / info["file"], mmap_mode="r")

    def read_rows(self, name: str, rows: Sequence[int]) -> np.ndarray:
        """Rows ``rows`` of array ``name`` as a new (len(rows), ...) array, read with pread (no mapping)."""
        info = self._info(name)
        path = self.root / info["file"]
        dtype, shape = np.dtype(info["dtype"]), tuple(info["shape"])
        row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        out = np.empty((len(rows), *shape[1:]), dtype)
        flat = out.reshape(len(rows), -1).view(np.uint8)
        fd = os.open(path, os.O_RDONLY)
        try:
            for k, r in enumerate(rows):
                if not 0 <= r < shape[0]:
                    raise IndexError(f"{path}: row {r} out of range [0, {shape[0]})")
                data = os.pread(fd, row_bytes, self._offsets[name] + r * row_bytes)
                if len(data) != row_bytes:
                    raise RepositoryError(f"{path}: truncated at row {r}")
                flat[k] = np.frombuffer(data, np.uint8)
        finally:
            os.close(fd)
        return out

    def get(self, name: str, image_ids: Sequence[str]) -> np.ndarray:
        """Rows of ``name`` for the given image ids (lookup by id)."""
        return self.read_rows(name, self.rows_of(image_ids))

    def verify(self) -> None:
        """Recompute every array's sha256 against the index (reads the arrays)."""
        for name, info in self.index["arrays"].items():
            digest = _sha256(self.root / info["file"])
            if digest != info["sha256"]:
                raise RepositoryError(f"{self.root / info['file']}: checksum mismatch (array {name!r} was modified "
                                      "or corrupted)")


class RepositoryWriter:
    """Builds a repository chunk by chunk; resumable; moved into place atomically by :meth:`finish`.

    ``arrays`` maps a name to (per-row shape, dtype). ``build_key`` identifies what is being built (config and
    inputs): a partial left by a different build is discarded, not resumed.
    """

    def __init__(self, root: str | Path, ids: Sequence[str], arrays: dict[str, tuple[tuple[int, ...], str]],
                 build_key: str, meta: dict[str, Any] | None = None) -> None:
        if len(set(ids)) != len(ids):
            raise RepositoryError(f"{root}: image ids must be unique")
        if not ids:
            raise RepositoryError(f"{root}: a repository needs at least one image")
        self.root = Path(root)
        self.partial = self.root.with_name(self.root.name + ".partial")
        self.ids, self.arrays, self.build_key, self.meta = list(ids), arrays, build_key, meta or {}
        self.done = 0
        progress = self.partial / PROGRESS
        if progress.is_file():
            state = json.loads(progress.read_text())
            if state.get("build_key") == build_key and state.get("ids") == self.ids:
                self.done = int(state["done"])
            else:
                shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        self._maps = {}
        for name, (shape, dtype) in arrays.items():
            path = self.partial / f"{name}.npy"
            full = (len(self.ids), *shape)
            if self.done and path.is_file():
                self._maps[name] = np.load(path, mmap_mode="r+")
            else:
                self._maps[name] = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=full)
        if not self.done:
            self._save_progress()

    @property
    def remaining(self) -> range:
        """Row indices still to write."""
        return range(self.done, len(self.ids))

    def _save_progress(self) -> None:
        tmp = self.partial / (PROGRESS + ".tmp")
        tmp.write_text(json.dumps({"build_key": self.build_key, "ids": self.ids, "done": self.done}))
        os.replace(tmp, self.partial / PROGRESS)

    def write_chunk(self, start: int, values: dict[str, np.ndarray]) -> None:
        """Rows ``start .. start + n`` of every array; chunks must come in order (``start == done``)."""
        if start != self.done:
            raise RepositoryError(f"{self.partial}: chunk starts at row {start}, expected {self.done}")
        if set(values) != set(self.arrays):
            raise RepositoryError(f"{self.partial}: a chunk must hold every array {sorted(self.arrays)}")
        n = {len(v) for v in values.values()}
        if len(n) != 1:
            raise RepositoryError(f"{self.partial}: arrays of one chunk must have the same number of rows")
        count = n.pop()
        for name, value in values.items():
            target = self._maps[name]
            if value.shape[1:] != target.shape[1:]:
                raise RepositoryError(f"{self.partial}: array {name!r} rows are {value.shape[1:]}, expected "
                                      f"{target.shape[1:]}")
            target[start:start + count] = value
            target.flush()
        self.done = start + count
        self._save_progress()

    def finish(self) -> FeatureRepository:
        if self.done != len(self.ids):
            raise RepositoryError(f"{self.partial}: only {self.done} of {len(self.ids)} rows written")
        arrays = {}
        for name, target in self._maps.items():
            target.flush()
            arrays[name] = {"file": f"{name}.npy", "shape": list(target.shape), "dtype": target.dtype.str,
                            "sha256": _sha256(self.partial / f"{name}.npy")}
        self._maps.clear()
        index = {"format_version": FORMAT_VERSION, "ids": self.ids, "arrays": arrays, "build_key": self.build_key,
                 "meta": self.meta}
        (self.partial / INDEX).write_text(json.dumps(index, indent=1))
        (self.partial / PROGRESS).unlink()
        old = self.root.with_name(self.root.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.root.exists():
            os.replace(self.root, old)
        os.replace(self.partial, self.root)
        shutil.rmtree(old, ignore_errors=True)
        return FeatureRepository(self.root)


def open_if_built(root: str | Path, build_key: str) -> FeatureRepository | None:
    """The repository at ``root`` when it exists and was built with ``build_key``, else None."""
    try:
        repo = FeatureRepository(root)
    except RepositoryError:
        return None
    return repo if repo.index.get("build_key") == build_key else None
