from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # training/ runs from the checkout
    sys.path.insert(0, str(REPO))


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
