"""``python -m training``: datasets, the main job and (in later stages) training, export and evaluation."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from training.config import ConfigError, load_config
from training.data import FORMATS, DatasetError, SynthConfig, load_dataset, write_synthetic_dataset
from training.pipeline import STAGE_NAMES, run_pipeline


def _cmd_synth(args: argparse.Namespace) -> int:
    config = SynthConfig(num_images=args.num_images, size=args.size, seed=args.seed, contrast=tuple(args.contrast),
                         max_defects=args.max_defects, background_fraction=args.background_fraction)
    out = write_synthetic_dataset(args.out, config, overwrite=args.overwrite)
    print(f"wrote {config.num_images} synthetic images to {out}")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    dataset = load_dataset(args.path, format=args.format, on_error="skip" if args.skip_bad else "raise")
    stats = dataset.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(f"{stats['format']} dataset at {stats['root']}: {stats['num_images']} images, "
              f"{stats['num_boxes']} boxes, {stats['num_background_images']} without defects")
        for name, count in stats["boxes_per_class"].items():
            print(f"  {name:20s} {count}")
    if dataset.skip_report:
        print(dataset.skip_report.summary(), file=sys.stderr)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    run_dir = Path(args.out) if args.out else Path("runs") / config.name
    stages = args.stages.split(",") if args.stages else None
    results = run_pipeline(config, run_dir, stages=stages, data_override=args.data, force=args.force)
    for name, result in results.items():
        state = "skipped (done)" if result.get("skipped") else f"{result.get('seconds', 0):.1f} s"
        print(f"[{name}] {state}: " + json.dumps({k: v for k, v in result.items() if k not in ("skipped", "seconds")}))
    print(f"run directory: {run_dir.resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description="diffdefect-edge training")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="synthesize or inspect datasets").add_subparsers(dest="data_command",
                                                                                         required=True)
    p = data.add_parser("synth", help="write a synthetic steel-defect dataset as a VOC folder")
    p.add_argument("--out", required=True)
    p.add_argument("--num-images", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--contrast", type=float, nargs=2, default=[0.15, 1.0], metavar=("LOW", "HIGH"),
                   help="defect contrast range (1.0 = strong; 0.15 = faint, inside the texture's variation)")
    p.add_argument("--max-defects", type=int, default=3)
    p.add_argument("--background-fraction", type=float, default=0.1)
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    p.set_defaults(func=_cmd_synth)
    p = data.add_parser("stats", help="load a dataset (any format) and print its statistics")
    p.add_argument("path")
    p.add_argument("--format", default="auto", choices=("auto",) + FORMATS)
    p.add_argument("--json", action="store_true")
    p.add_argument("--skip-bad", action="store_true", help="skip bad records (reported) instead of failing")
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser("run", help="run the pipeline stages of a config (the main job)")
    p.add_argument("--config", required=True)
    p.add_argument("--data", help="dataset folder (overrides the config's data.source)")
    p.add_argument("--out", help="run directory (default runs/<config name>)")
    p.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGE_NAMES)}")
    p.add_argument("--force", action="store_true", help="rerun stages even if done with this config")
    p.set_defaults(func=_cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (DatasetError, ConfigError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
