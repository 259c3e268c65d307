import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pytest  # noqa: E402

CONFIG = """
name: bench
data: {source: synthetic, val_fraction: 0.25, synthetic: {num_images: 16, size: 160}}
model: {size: n, input_size: 160}
train: {epochs: 1, batch_size: 8, eval_every: 1}
export: {int8: true, calibration_images: 8}
"""


@pytest.fixture(scope="session")
def package(tmp_path_factory):
    from training.cli import main

    root = tmp_path_factory.mktemp("bench")
    (root / "bench.yaml").write_text(CONFIG)
    assert main(["train", "--config", str(root / "bench.yaml"), "--out", str(root / "run")]) == 0
    assert main(["export", "--run", str(root / "run"), "--out", str(root / "pkg"), "--int8",
                 "--calibration-images", "8"]) == 0
    return root / "pkg"
