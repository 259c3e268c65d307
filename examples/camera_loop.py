"""The camera loop a line integrator copies: detect on every frame, reject defective parts, keep a log.

    python examples/camera_loop.py --model runs/quickstart/package --source 0          # camera 0
    python examples/camera_loop.py --model PKG --source rtsp://10.0.0.5/stream --min-score 0.5
"""

import argparse
import json

from diffdefect_edge import Detector
from diffdefect_edge.sources import open_source


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--source", required=True, help="camera index, video, folder or URL")
    ap.add_argument("--min-score", type=float, default=0.25, help="reject a part when a defect scores this high")
    ap.add_argument("--max-frames", type=int, default=None)
    args = ap.parse_args()

    detector = Detector(args.model, conf=args.min_score)     # OpenVINO on CPU; device="GPU" for an Intel GPU
    source = open_source(args.source)                       # live sources reconnect by themselves
    inspected = rejected = 0
    try:
        for index, frame in enumerate(source):
            if args.max_frames is not None and index >= args.max_frames:
                break
            inspected += 1
            detections = detector(frame)                    # boxes in frame pixels, scores, class names
            if len(detections):                              # here a real line would signal its reject gate
                rejected += 1
                print(json.dumps({"frame": index, "reject": True, **detections.to_dict()}))
    finally:
        source.close()
        detector.close()
    print(json.dumps({"frames": inspected, "rejected": rejected, "dropped": source.stats.dropped}))


if __name__ == "__main__":
    main()
