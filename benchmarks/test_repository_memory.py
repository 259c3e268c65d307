"""Feature repository memory: one epoch of a data loader over 10,000 images must not hold the repository.

    python -m pytest benchmarks/test_repository_memory.py -s

Two synthetic repositories of raw-feature-sized rows (144 x 20 x 20 float16, 115 KB per image: the quickstart's
raw features), 1,000 and 10,000 images (1.15 GB). In a fresh process each, a torch DataLoader reads every row
once in shuffled batches of 32 through ``FeatureRepository.read_rows`` (what the ResVAE stage does); the peak
RSS of the two runs is compared. Target: the 10,000-image epoch within 300 MB of the 1,000-image one.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from training.repository.store import RepositoryWriter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ROW = (144, 20, 20)
TARGET_MB = 300

EPOCH = textwrap.dedent("""
    import sys
    import numpy as np, torch
    sys.path.insert(0, {repo!r})
    from torch.utils.data import DataLoader, Dataset
    from training.repository.store import FeatureRepository

    class Rows(Dataset):
        def __init__(self, repo):
            self.repo = repo
        def __len__(self):
            return len(self.repo)
        def __getitem__(self, i):
            return torch.from_numpy(self.repo.read_rows("features", [i])[0])

    repo = FeatureRepository({root!r})
    total = 0.0
    for batch in DataLoader(Rows(repo), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)):
        total += float(batch.float().mean())
    # VmHWM: this process image's peak RSS (ru_maxrss would also carry the forking parent's peak across exec)
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(int(hwm.split()[1]) / 1024.0)  # MB
""")


def _build(root: Path, n: int) -> Path:
    ids = [f"img_{i:05d}" for i in range(n)]
    writer = RepositoryWriter(root, ids, {"features": (ROW, "float16")}, "bench", meta={"grid": ROW[-1]})
    rng = np.random.default_rng(0)
    block = rng.standard_normal((500, *ROW)).astype(np.float16)
    for start in range(0, n, 500):
        writer.write_chunk(start, {"features": block[:min(500, n - start)]})
    writer.finish()
    return root


def _peak_mb(root: Path) -> float:
    proc = subprocess.run([sys.executable, "-c", EPOCH.format(repo=str(REPO), root=str(root))],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    return float(proc.stdout.strip().splitlines()[-1])


def test_epoch_peak_rss_does_not_grow_with_repository_size(tmp_path: Path):
    small = _peak_mb(_build(tmp_path / "r1k", 1_000))
    large = _peak_mb(_build(tmp_path / "r10k", 10_000))
    size_mb = 10_000 * int(np.prod(ROW)) * 2 / 2**20
    print(f"\npeak RSS: 1,000 images {small:.0f} MB, 10,000 images {large:.0f} MB (repository {size_mb:.0f} MB); "
          f"growth {large - small:+.0f} MB (target < {TARGET_MB} MB)")
    assert large - small < TARGET_MB
