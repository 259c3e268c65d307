"""Inspect a folder of part images: a CSV with one row per defect, annotated images, counts per class.

    python examples/inspect_folder.py --model runs/quickstart/package --images photos/ --out inspected/
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

import cv2

from diffdefect_edge import Detector
from diffdefect_edge.sources import IMAGE_SUFFIXES


def inspect_folder(model: str, images: Path, out: Path, conf: float | None = None, batch: int = 8) -> Counter:
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"{images}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter()
    with Detector(model, conf=conf) as detector, (out / "defects.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "class", "score", "x1", "y1", "x2", "y2"])
        for start in range(0, len(paths), batch):                    # a few images per inference call
            readable = []
            for path in paths[start:start + batch]:
                frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if frame is None:
                    print(f"skipped {path}: not a readable image")
                else:
                    readable.append((path, frame))
            for (path, frame), dets in zip(readable, detector.predict_batch([f for _, f in readable])):
                counts["images"] += 1
                counts["images with defects"] += bool(len(dets))
                for box, score, _, name in dets:
                    writer.writerow([path.name, name, f"{score:.4f}", *(f"{v:.1f}" for v in box)])
                    counts[name] += 1
                cv2.imwrite(str(out / f"{path.stem}_inspected.png"), dets.draw(frame))
    return counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--conf", type=float, default=None)
    args = ap.parse_args()
    counts = inspect_folder(args.model, args.images, args.out, args.conf)
    for name, n in counts.most_common():
        print(f"{name:24s} {n}")
    print(f"wrote {args.out / 'defects.csv'} and the annotated images")


if __name__ == "__main__":
    main()
