"""Run a recorded line video through the detector and write a markdown report with an annotated video.

    python examples/video_to_report.py --model runs/quickstart/package --video line.mp4 --out report/

The report lists defects per class, the frames where defects were seen (as time ranges), latency
percentiles and a thumbnail of the highest-scoring defect of each class.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import cv2

from diffdefect_edge import Detector
from diffdefect_edge.loop import LoopOutputs, run_loop
from diffdefect_edge.sources import FileSource


def defect_ranges(frames_with_defects: list[int]) -> list[tuple[int, int]]:
    """Consecutive frame indices merged into (first, last) ranges."""
    ranges: list[tuple[int, int]] = []
    for i in frames_with_defects:
        if ranges and i == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], i)
        else:
            ranges.append((i, i))
    return ranges


def video_to_report(model: str, video: Path, out: Path, conf: float | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    source = FileSource(video)
    fps = source.fps or 25.0
    per_class: dict[str, int] = defaultdict(int)
    best: dict[str, tuple[float, object]] = {}
    frames_with_defects: list[int] = []

    def collect(index: int, frame, dets) -> None:
        if len(dets):
            frames_with_defects.append(index)
        for box, score, _, name in dets:
            per_class[name] += 1
            if score > best.get(name, (0.0, None))[0]:
                x1, y1, x2, y2 = (int(v) for v in box)
                best[name] = (score, frame[max(0, y1):y2, max(0, x1):x2].copy())

    with Detector(model, conf=conf) as detector:
        summary = run_loop(detector, source, LoopOutputs(save=out / "annotated.mp4", overwrite=True),
                           on_result=collect)
    lines = [f"# Inspection report: {video.name}", "",
             f"{summary.frames} frames at {fps:.1f} fps; {summary.frames_with_defects} with defects; "
             f"latency p50 {summary.latency_p50_ms:.2f} ms, p95 {summary.latency_p95_ms:.2f} ms, "
             f"p99 {summary.latency_p99_ms:.2f} ms ({summary.fps:.1f} frames per second processed).", "",
             "| class | defects | best score | example |", "|---|---:|---:|---|"]
    for name in sorted(per_class, key=lambda n: -per_class[n]):
        score, crop = best[name]
        thumb = f"best_{name}.png"
        if crop is not None and crop.size:
            cv2.imwrite(str(out / thumb), crop)
        lines.append(f"| {name} | {per_class[name]} | {score:.2f} | ![{name}]({thumb}) |")
    lines += ["", "## When defects were seen", ""]
    lines += [f"- {a / fps:7.2f} s - {b / fps:7.2f} s (frames {a}-{b})" for a, b in defect_ranges(frames_with_defects)]
    lines += ["", "Annotated video: [annotated.mp4](annotated.mp4)", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--video", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--conf", type=float, default=None)
    args = ap.parse_args()
    print(f"wrote {video_to_report(args.model, args.video, args.out, args.conf)}")


if __name__ == "__main__":
    main()
