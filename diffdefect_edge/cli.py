"""The ``diffdefect-edge`` command."""

from __future__ import annotations

import argparse
import json
import sys

from diffdefect_edge import __version__


def _cmd_build_info(args: argparse.Namespace) -> int:
    from diffdefect_edge.kernels import build_info

    print(json.dumps(build_info(), indent=2))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from diffdefect_edge.package import PackageError, load_package

    try:
        pkg = load_package(args.package)
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = pkg.metadata
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    model = meta["model"]
    print(f"package   {pkg.path}  (format version {meta['format_version']}, all {len(meta['files'])} checksums OK)")
    print(f"model     {model['name']} size {model['size']}, {model['parameters'] / 1e6:.2f} M parameters, "
          f"{model['gflops']:.2f} GFLOPs, task {meta['task']}")
    print(f"input     {pkg.input_size}x{pkg.input_size}, letterbox pad {meta['input']['letterbox']['pad_value']}")
    print(f"classes   {', '.join(pkg.class_names)}")
    print(f"defaults  conf {meta['defaults']['conf']}, iou {meta['defaults']['iou']}")
    for m in pkg.models:
        print(f"  {m.backend:9s} {m.precision:5s} {m.path.relative_to(pkg.path)}  runtime steps: {', '.join(m.runtime_steps)}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from diffdefect_edge.backends import BACKEND_FOR_FILE, BackendError
    from diffdefect_edge.detector import Detector
    from diffdefect_edge.package import load_package

    pkg = load_package(args.package)
    print(f"{'backend':12s} {'precision':9s} {'raw p50 ms':>10s} {'e2e p50 ms':>10s} {'e2e p95 ms':>10s} {'fps':>7s}")
    for m in pkg.models:
        backend = BACKEND_FOR_FILE[m.backend]
        if args.backends and backend not in args.backends.split(","):
            continue
        try:
            with Detector(pkg, backend=backend, precision=m.precision, device=args.device) as det:
                st = det.benchmark(runs=args.runs)
        except BackendError as exc:
            print(f"{backend:12s} {m.precision:9s} skipped: {exc}")
            continue
        print(f"{backend:12s} {m.precision:9s} {st['raw_p50_ms']:10.2f} {st['end_to_end_p50_ms']:10.2f} "
              f"{st['end_to_end_p95_ms']:10.2f} {st['fps']:7.1f}")
    return 0


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
    p = sub.add_parser("bench", help="latency table per backend and precision on a 1280x720 frame")
    p.add_argument("package")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--device", default="CPU")
    p.add_argument("--backends", help="comma-separated subset of openvino,onnxruntime,torch")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
