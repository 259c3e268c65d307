"""Stage ``demo``: the run's package in the camera loop over a video made from the validation images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2


def write_line_video(records: list, path: Path, fps: float = 10.0, size: int = 320) -> Path:
    """A camera-like video of the given images (each resized to ``size`` square), for the loop demo."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write an mp4 video here")
    try:
        for rec in records:
            frame = cv2.imread(str(rec.image_path), cv2.IMREAD_COLOR)
            writer.write(cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR))
    finally:
        writer.release()
    return path


def camera_loop_demo(ctx) -> dict[str, Any]:
    from diffdefect_edge import Detector
    from diffdefect_edge.loop import LoopOutputs, run_loop, summary_dict
    from diffdefect_edge.sources import FileSource
    from training.pipeline.context import load_split

    out = ctx.stage_dir("demo")
    _, val = load_split(ctx)
    video = write_line_video(val.records, out / "line.mp4")
    outputs = LoopOutputs(save=out / "annotated.mp4", jsonl=out / "results.jsonl", db=out / "inspections.sqlite",
                          overwrite=True)
    (out / "inspections.sqlite").unlink(missing_ok=True)
    with Detector(ctx.stage_dir("package")) as det:
        summary = run_loop(det, FileSource(video), outputs)
    result = summary_dict(summary)
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    return {"video": str(video), "annotated": str(outputs.save), "jsonl": str(outputs.jsonl), "db": str(outputs.db),
            "summary": summary.to_text()}
