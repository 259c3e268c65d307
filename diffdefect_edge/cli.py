"""The ``diffdefect-edge`` command."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from diffdefect_edge import __version__


def _cmd_build_info(args: argparse.Namespace) -> int:
    from diffdefect_edge.kernels import build_info

    print(json.dumps(build_info(), indent=2))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from diffdefect_edge.package import load_package

    pkg = load_package(args.package)
    meta = pkg.meta
    if args.json:
        print(json.dumps(pkg.metadata, indent=2))
        return 0
    model = meta.model
    signed = "signed" if (pkg.path / "signature.json").is_file() else "not signed"
    print(f"package   {pkg.path}  (format version {meta.format_version}, {meta.created_by}, all {len(meta.files)} "
          f"checksums OK, {signed})")
    print(f"model     {model.name} size {model.size}, {model.parameters / 1e6:.2f} M parameters, "
          f"{model.gflops:.2f} GFLOPs, task {meta.task}")
    print(f"input     {pkg.input_size}x{pkg.input_size}, letterbox pad {meta.input.letterbox.pad_value}")
    print(f"classes   {', '.join(pkg.class_names)}")
    print(f"defaults  conf {meta.defaults.conf}, iou {meta.defaults.iou}")
    for m in pkg.models:
        print(f"  {m.backend:9s} {m.precision:5s} {m.rel}  runtime steps: {', '.join(m.runtime_steps)}")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    from diffdefect_edge.signing import sign_package

    path = sign_package(args.package, args.key)
    print(f"signed {args.package}: {path.name} written")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from diffdefect_edge.package import load_package

    pkg = load_package(args.package, trusted_keys=args.key)
    print(f"{args.package}: signature OK (key {pkg.signed_by[:16]}), all {len(pkg.meta.files)} checksums OK")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from diffdefect_edge.backends import BACKEND_FOR_FILE, BackendError
    from diffdefect_edge.detector import MODES, Detector
    from diffdefect_edge.package import load_package
    from diffdefect_edge.sources import read_image

    pkg = load_package(args.package, trusted_keys=args.trusted_key)
    try:
        frame = read_image(args.image) if args.image is not None else None
    except ValueError as exc:
        print(f"error: --image {exc}", file=sys.stderr)
        return 2
    modes = args.modes.split(",")
    for mode in modes:
        if mode not in MODES:
            print(f"error: --modes takes latency and/or throughput, got {mode!r}", file=sys.stderr)
            return 2
    print(f"{'backend':12s} {'precision':9s} {'mode':10s} {'raw p50 ms':>10s} {'e2e p50 ms':>10s} "
          f"{'e2e p95 ms':>10s} {'fps':>7s}")
    for m in pkg.models:
        backend = BACKEND_FOR_FILE[m.backend]
        if args.backends and backend not in args.backends.split(","):
            continue
        for mode in modes:
            try:
                with Detector(pkg, backend=backend, precision=m.precision, device=args.device, mode=mode,
                              num_threads=args.threads) as det:
                    st = det.benchmark(frame, runs=args.runs)
            except BackendError as exc:
                print(f"{backend:12s} {m.precision:9s} {mode:10s} skipped: {exc}")
                continue
            print(f"{backend:12s} {m.precision:9s} {mode:10s} {st['raw_p50_ms']:10.2f} {st['end_to_end_p50_ms']:10.2f} "
                  f"{st['end_to_end_p95_ms']:10.2f} {st['fps']:7.1f}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from diffdefect_edge.backends import BackendError
    from diffdefect_edge.detector import Detector
    from diffdefect_edge.loop import LoopOutputs, run_loop, summary_dict
    from diffdefect_edge.package import PackageError
    from diffdefect_edge.sources import SourceError, open_source

    outputs = LoopOutputs(save=args.save, jsonl=args.jsonl, db=args.db, crops=args.crops, show=args.show,
                          overwrite=args.overwrite, resume=args.resume)
    try:
        detector = Detector(args.model, backend=args.backend, device=args.device, precision=args.precision,
                            conf=args.conf, iou=args.iou, mode=args.mode, num_threads=args.threads,
                            trusted_keys=args.trusted_key, tile=args.tile, cache_dir=args.cache_dir)
        source = open_source(args.source)
    except (PackageError, BackendError, SourceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C while stopping: give up at once
            raise KeyboardInterrupt
        received.append(signal.Signals(signum).name)
        stop.set()
        source.stop()  # wakes a loop waiting for a live frame

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    print(f"running {detector!r} on {args.source} (Ctrl-C stops)", file=sys.stderr)
    try:
        summary = run_loop(detector, source, outputs, max_frames=args.max_frames, max_fps=args.max_fps, stop=stop,
                           source_name=str(args.source), batch=args.batch)
    except (FileExistsError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        source.close()
        detector.close()
    if received:
        summary.stopped_by = f"signal ({received[0]})"
    print(json.dumps(summary_dict(summary), allow_nan=False) if args.summary_json else f"summary: {summary.to_text()}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_trusted_key_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trusted-key", action="append", metavar="PUB.pem",
                   help="refuse the package unless it is signed by this public key (repeat for several)")


def _add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive_int, help="inference threads (default: OMP_NUM_THREADS, else the "
                   "usable cores)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffdefect-edge", description="diffdefect-edge runtime SDK")
    parser.add_argument("--version", action="version", version=f"diffdefect-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build-info", help="print how the compiled kernels were built (JSON)")
    p.set_defaults(func=_cmd_build_info)
    p = sub.add_parser("info", help="show a model package's metadata (checksums verified)")
    p.add_argument("package")
    p.add_argument("--json", action="store_true", help="print the whole metadata.json")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("sign", help="sign a package (metadata and, through its checksums, every file)")
    p.add_argument("package")
    p.add_argument("--key", required=True, metavar="KEY.pem", help="PEM private key (ECDSA or Ed25519)")
    p.set_defaults(func=_cmd_sign)
    p = sub.add_parser("verify", help="check a package's signature and checksums; exit 0 if they hold, 2 if not")
    p.add_argument("package")
    p.add_argument("--key", required=True, action="append", metavar="PUB.pem", help="trusted PEM public key "
                   "(repeat for several)")
    p.set_defaults(func=_cmd_verify)
    p = sub.add_parser("bench", help="latency table per backend, precision and mode on the package's sample image "
                                     "(a real frame), or --image")
    p.add_argument("package")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--image", type=Path, help="time this image instead of the package's sample")
    p.add_argument("--modes", default="latency,throughput", help="comma-separated: latency, throughput")
    p.add_argument("--device", default="CPU")
    p.add_argument("--backends", help="comma-separated subset of openvino,onnxruntime")
    _add_threads_argument(p)
    _add_trusted_key_argument(p)
    p.set_defaults(func=_cmd_bench)
    p = sub.add_parser("run", help="the camera loop: detect on a camera, video, folder or URL and record results")
    p.add_argument("--model", required=True, help="model package folder")
    p.add_argument("--source", required=True, help="camera index, video file, folder, glob or rtsp/http URL")
    p.add_argument("--show", action="store_true", help="show the annotated frames in a window (q or Esc quits)")
    p.add_argument("--save", type=Path, help="write the annotated frames to this video (.mp4 or .avi)")
    p.add_argument("--jsonl", type=Path, help="write one JSON line per frame (index, timestamp, latency, detections)")
    p.add_argument("--db", type=Path, help="record frames with defects in this SQLite database (WAL, appends)")
    p.add_argument("--crops", type=Path, help="save an image of every detected defect in this folder")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--max-fps", type=float, help="read a file source no faster than this (replay at line rate)")
    p.add_argument("--backend", default="auto", choices=["auto", "openvino", "onnxruntime"])
    p.add_argument("--device", default="CPU")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8", "bf16", "auto"],
                   help="model precision; bf16 / auto run the FP32 model in bf16 arithmetic (auto: where the CPU has it)")
    p.add_argument("--cache-dir", type=Path, help="keep OpenVINO's compiled graphs here: a restart does not compile")
    p.add_argument("--mode", default="latency", choices=["latency", "throughput"])
    p.add_argument("--batch", type=int, help="frames per request in throughput mode (default 4; 1 for the least "
                                             "latency on a live camera)")
    p.add_argument("--conf", type=float, help="score threshold (default: the package's)")
    p.add_argument("--iou", type=float, help="NMS IoU threshold (default: the package's)")
    p.add_argument("--overwrite", action="store_true", help="replace existing --save / --jsonl / --db files")
    p.add_argument("--resume", action="store_true", help="after a crash: append to the existing --jsonl and --db "
                   "under a new run id")
    p.add_argument("--tile", type=int, help="slice frames larger than this (pixels) into overlapping tiles")
    p.add_argument("--summary-json", action="store_true", help="print the final summary as one JSON object")
    _add_threads_argument(p)
    _add_trusted_key_argument(p)
    p.set_defaults(func=_cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from diffdefect_edge.backends import BackendError
    from diffdefect_edge.package import PackageError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (PackageError, BackendError) as exc:  # a bad package, key or runtime: one line, never a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `diffdefect-edge info --json | head`: the reader left, which is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit would fail on the closed pipe again
        return 0


if __name__ == "__main__":
    sys.exit(main())
