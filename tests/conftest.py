from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffdefect_edge import _kernels, kernels

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # training/ runs from the checkout
    sys.path.insert(0, str(REPO))

# the CUDA kernels compiled in (their argument checks run without a GPU) / a GPU that ran the self-test kernel
needs_cuda_build = pytest.mark.skipif(not hasattr(_kernels, "fft_filter_cuda"), reason="built without CUDA")
needs_cuda = pytest.mark.skipif(not kernels.cuda_available(), reason="no usable CUDA device")
try:  # the test-only module (make setup builds it with DDE_BUILD_TESTING=ON; wheels never hold it)
    import _dde_gpu_emulation as gpu_emulation
except ImportError:
    gpu_emulation = None
needs_gpu_emulation = pytest.mark.skipif(gpu_emulation is None, reason="_dde_gpu_emulation not built "
                                         "(install with DDE_BUILD_TESTING=ON)")


def write_gray_jpeg_3ch(path: Path, width: int = 200, height: int = 200, seed: int = 0) -> Path:
    """A NEU-DET-like JPEG: 3 channels with R == G == B."""
    gray = np.random.default_rng(seed).integers(0, 255, (height, width), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.merge([gray, gray, gray]))
    return path


def voc_xml(filename: str, objects: list[tuple[str, tuple[int, int, int, int]]], width: int = 200,
            height: int = 200, depth: int = 1) -> str:
    objs = "".join(
        f"<object><name>{name}</name><truncated>1</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b in objects
    )
    return (f"<annotation><folder>cr</folder><filename>{filename}</filename><size><width>{width}</width>"
            f"<height>{height}</height><depth>{depth}</depth></size>{objs}</annotation>")


@pytest.fixture
def neu_like(tmp_path: Path) -> Path:
    """A tiny folder with NEU-DET's layout and quirks."""
    root = tmp_path / "neu"
    (root / "ANNOTATIONS").mkdir(parents=True)
    write_gray_jpeg_3ch(root / "IMAGES" / "crazing_1.jpg", seed=1)
    write_gray_jpeg_3ch(root / "IMAGES" / "patches_7.jpg", seed=2)
    # <filename> without extension; second box labelled differently from the file name; 1-based coords
    (root / "ANNOTATIONS" / "crazing_1.xml").write_text(
        voc_xml("crazing_1", [("crazing", (1, 1, 200, 100)), ("scratches", (10, 20, 30, 200))]))
    (root / "ANNOTATIONS" / "patches_7.xml").write_text(voc_xml("patches_7.jpg", [("patches", (50, 60, 70, 80))]))
    return root


TINY_CONFIG = """
name: tiny
seed: 0
data:
  source: synthetic
  val_fraction: 0.25
  synthetic: {num_images: 16, size: 128, contrast: [0.8, 1.0], max_defects: 2, background_fraction: 0.0}
model: {size: n, input_size: 96, seg_head: auto}
train:
  epochs: 30
  batch_size: 4
  eval_every: 10
  lr: 0.005
  ema: false
  cache_images: true
  augment: {hflip: 0.0, vflip: 0.0, scale: [1.0, 1.0], translate: 0.0, brightness: 0.0, contrast: 0.0}
export: {int8: true, calibration_images: 8, conf: 0.05}
"""


def _write_config(tmp_path_factory, name: str, text: str) -> Path:
    path = tmp_path_factory.mktemp("configs") / name
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def tiny_config_path(tmp_path_factory) -> Path:
    return _write_config(tmp_path_factory, "tiny.yaml", TINY_CONFIG)


def write_tiny_synthetic(root: Path, seed: int = 0, background_fraction: float = 0.0) -> Path:
    """16 strong-contrast 128 px synthetic images (the tiny model's data); ``background_fraction`` defect-free."""
    from training.data import SynthConfig, write_synthetic_dataset

    write_synthetic_dataset(root, SynthConfig(num_images=16, size=128, seed=seed, contrast=(0.8, 1.0), max_defects=2,
                                              background_fraction=background_fraction))
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return write_tiny_synthetic(tmp_path_factory.mktemp("tiny-data") / "synthetic")


@pytest.fixture(scope="session")
def frames(tiny_dataset: Path) -> list[np.ndarray]:
    """The first 8 images of the tiny dataset as BGR frames."""
    return [cv2.imread(str(p)) for p in sorted((tiny_dataset / "JPEGImages").iterdir())[:8]]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_config_path: Path, tiny_dataset: Path) -> Path:
    """A detector trained for 30 short epochs on 12 synthetic images (about 20 s on 2 cores)."""
    from training.cli import main

    run = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--config", str(tiny_config_path), "--data", str(tiny_dataset), "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory, tiny_run: Path) -> Path:
    """The tiny run exported with every format: OpenVINO FP32/FP16/INT8, ONNX, torch.export."""
    from training.cli import main

    out = tmp_path_factory.mktemp("packages") / "tiny"
    assert main(["export", "--run", str(tiny_run), "--out", str(out), "--int8", "--fp16",
                 "--calibration-images", "8"]) == 0
    return out


TINY_PIPELINE_CONFIG = TINY_CONFIG.replace("epochs: 30", "epochs: 6").replace("eval_every: 10", "eval_every: 3") + """
ddpm: {image_size: 32, base_width: 16, epochs: 3, batch_size: 8, sample_steps: 10, num_samples: 4}
features: {timesteps: [50, 150, 250], blocks: ["up.1.1", "up.2.1"], chunk_size: 8}
resvae: {latent_channels: 8, hidden: 32, blocks: 1, epochs: 3, batch_size: 8}
teacher: {levels: [0, 1], heads: 2}
"""


@pytest.fixture(scope="session")
def tiny_pipeline_config(tmp_path_factory) -> Path:
    return _write_config(tmp_path_factory, "tiny-pipeline.yaml", TINY_PIPELINE_CONFIG)


@pytest.fixture(scope="session")
def tiny_pipeline_run(tmp_path_factory, tiny_pipeline_config: Path) -> tuple[Path, dict]:
    """Every stage of the main job on the tiny config (about a minute on 2 cores); returns (run dir, results)."""
    from training.config import load_config
    from training.pipeline import run_pipeline

    run = tmp_path_factory.mktemp("pipeline") / "run"
    return run, run_pipeline(load_config(tiny_pipeline_config), run)


# Tests that train or export a model (directly or through these fixtures) are the end-to-end ones: marked
# ``slow`` here, in one place, so that ``pytest -m "not slow"`` (make test-fast) is the quick subset.
TRAINED_FIXTURES = {"tiny_run", "tiny_package", "tiny_pipeline_run", "package"}
SLOW_MODULES = {"test_pipeline.py", "test_distill.py"}  # each test there runs pipeline stages itself


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINED_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
