"""The feature repository: lookup by id, lazy opening, memory mapping, atomic and resumable builds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from training.repository.store import FeatureRepository, RepositoryError, RepositoryWriter, open_if_built

REPO = Path(__file__).resolve().parents[1]


def _build(root: Path, n: int = 10, key: str = "k", chunk: int = 4, scale: float = 1.0) -> FeatureRepository:
    ids = [f"img_{i:03d}" for i in range(n)]
    writer = RepositoryWriter(root, ids, {"features": ((3, 4, 4), "float16"), "extra": ((2,), "float32")}, key,
                              meta={"grid": 4})
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        writer.write_chunk(start, {"features": (np.ones((len(rows), 3, 4, 4)) * rows[:, None, None, None] * scale)
                                   .astype(np.float16),
                                   "extra": np.stack([rows, -rows], 1).astype(np.float32)})
    return writer.finish()


def test_lookup_by_id_and_memory_map(tmp_path: Path):
    repo = _build(tmp_path / "repo")
    assert len(repo) == 10 and "img_003" in repo and repo.shape("features") == (3, 4, 4)
    got = repo.get("features", ["img_007", "img_002"])
    assert got.dtype == np.float16 and got.shape == (2, 3, 4, 4)
    assert (got[0] == 7).all() and (got[1] == 2).all()
    np.testing.assert_array_equal(repo.get("extra", ["img_005"]), [[5, -5]])
    mm = repo.array("features")
    assert isinstance(mm, np.memmap) and not mm.flags.writeable and float(mm[9, 0, 0, 0]) == 9
    repo.verify()
    with pytest.raises(KeyError, match="img_999"):
        repo.get("features", ["img_999"])
    with pytest.raises(KeyError, match="no array 'nope'"):
        repo.get("nope", ["img_001"])


def test_opening_reads_only_the_index(tmp_path: Path, monkeypatch):
    _build(tmp_path / "repo")
    opened = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: opened.append(a) or real_load(*a, **k))
    repo = FeatureRepository(tmp_path / "repo")
    assert opened == [] and repo.names == ["features", "extra"]


def test_corrupt_repositories_are_refused(tmp_path: Path):
    repo = _build(tmp_path / "repo")
    with (repo.root / "features.npy").open("r+b") as f:  # tamper with one value
        f.seek(-2, os.SEEK_END)
        f.write(b"\x00\x7c")
    with pytest.raises(RepositoryError, match="features.npy: checksum mismatch"):
        repo.verify()
    with (repo.root / "extra.npy").open("r+b") as f:
        f.truncate(100)
    with pytest.raises(RepositoryError, match="extra.npy: missing or truncated"):
        FeatureRepository(repo.root)
    index = json.loads((repo.root / "index.json").read_text())
    index["format_version"] = 99
    (repo.root / "index.json").write_text(json.dumps(index))
    with pytest.raises(RepositoryError, match="format version 99"):
        FeatureRepository(repo.root)
    with pytest.raises(RepositoryError, match="no feature repository"):
        FeatureRepository(tmp_path / "missing")


def test_writer_refuses_bad_chunks(tmp_path: Path):
    writer = RepositoryWriter(tmp_path / "r", ["a", "b"], {"x": ((2,), "float32")}, "k")
    with pytest.raises(RepositoryError, match="expected 0"):
        writer.write_chunk(1, {"x": np.zeros((1, 2), np.float32)})
    with pytest.raises(RepositoryError, match="rows are"):
        writer.write_chunk(0, {"x": np.zeros((1, 3), np.float32)})
    with pytest.raises(RepositoryError, match="only 0 of 2"):
        writer.finish()
    with pytest.raises(RepositoryError, match="unique"):
        RepositoryWriter(tmp_path / "q", ["a", "a"], {"x": ((2,), "float32")}, "k")


BUILD_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, {repo!r})
    from training.repository.store import RepositoryWriter
    ids = [f"img_{{i:03d}}" for i in range(40)]
    w = RepositoryWriter({root!r}, ids, {{"features": ((3, 4, 4), "float16"), "extra": ((2,), "float32")}}, "new")
    for start in w.remaining[::4]:
        rows = np.arange(start, start + 4)
        w.write_chunk(start, {{"features": (np.ones((4, 3, 4, 4)) * rows[:, None, None, None] * 2).astype(np.float16),
                               "extra": np.stack([rows, -rows], 1).astype(np.float32)}})
        print(start, flush=True)
        time.sleep({delay})
    w.finish()
""")


def test_killed_build_keeps_the_old_repository_and_resumes(tmp_path: Path):
    root = tmp_path / "repo"
    _build(root, n=5, key="old")
    script = BUILD_SCRIPT.format(repo=str(REPO), root=str(root), delay=0.2)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    for _ in range(3):  # three chunks written, then the process is killed mid-build
        proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    old = FeatureRepository(root)  # the old repository is intact under the final name
    assert len(old) == 5 and old.index["build_key"] == "old" and open_if_built(root, "new") is None
    partial = json.loads((tmp_path / "repo.partial" / "progress.json").read_text())
    assert partial["done"] >= 12
    # resuming: the same build key continues from the last whole chunk and the result is complete and right
    resume = subprocess.run([sys.executable, "-c", BUILD_SCRIPT.format(repo=str(REPO), root=str(root), delay=0)],
                            capture_output=True, text=True, timeout=60)
    assert resume.returncode == 0, resume.stderr
    assert int(resume.stdout.split()[0]) == partial["done"]  # nothing redone
    new = FeatureRepository(root)
    new.verify()
    assert len(new) == 40 and new.index["build_key"] == "new"
    assert all(float(new.get("features", [f"img_{i:03d}"])[0, 0, 0, 0]) == 2 * i for i in range(40))
    assert not (tmp_path / "repo.partial").exists() and not (tmp_path / "repo.old").exists()


def test_interrupted_swap_is_repaired_on_open(tmp_path: Path):
    root = tmp_path / "repo"
    _build(root)
    os.replace(root, tmp_path / "repo.old")  # as if killed between the two renames
    assert len(FeatureRepository(root)) == 10


def test_partial_from_another_build_is_discarded(tmp_path: Path):
    root = tmp_path / "repo"
    w = RepositoryWriter(root, ["a", "b"], {"x": ((2,), "float32")}, "first")
    w.write_chunk(0, {"x": np.ones((1, 2), np.float32)})
    w2 = RepositoryWriter(root, ["a", "b"], {"x": ((2,), "float32")}, "second")
    assert w2.remaining == range(0, 2)


def test_reading_rows_does_not_map_the_file(tmp_path: Path):
    """read_rows uses positional reads: resident memory does not grow with what was read (checked at scale in
    benchmarks/test_repository_memory.py)."""
    repo = _build(tmp_path / "repo", n=64, chunk=64)
    maps_before = Path("/proc/self/maps").read_text().count(str(repo.root))
    for i in range(0, 64, 8):
        repo.read_rows("features", list(range(i, i + 8)))
    assert Path("/proc/self/maps").read_text().count(str(repo.root)) == maps_before
