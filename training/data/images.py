"""Image discovery and header-only size reading (Pillow reads the header, not the pixels)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from training.data.records import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file; DatasetError if it is missing or not an image."""
    if not path.is_file():
        raise DatasetError(path, "image file is missing")
    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(path, f"unreadable image ({exc.__class__.__name__}: {exc})") from None


def index_images_by_stem(root: Path, exclude: tuple[Path, ...] = ()) -> dict[str, Path]:
    """Map file stem -> image path for every image under ``root`` (recursive), skipping ``exclude`` dirs.

    Two images with one stem are ambiguous and raise DatasetError naming both.
    """
    found: dict[str, Path] = {}
    excluded = tuple(p.resolve() for p in exclude)
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            if any(path.resolve().is_relative_to(ex) for ex in excluded):
                continue
            if path.stem in found:
                raise DatasetError(path, f"image stem {path.stem!r} also used by {found[path.stem]}")
            found[path.stem] = path
    return found
