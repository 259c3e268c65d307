"""``python -m training``: datasets, the main job and (in later stages) training, export and evaluation."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from diffdefect_edge.threads import set_command_line_threads
from training.config import ConfigError, load_config
from training.data import FORMATS, DatasetError, SynthConfig, load_dataset, write_synthetic_dataset
from training.pipeline import STAGE_NAMES, run_pipeline, write_configured_synthetic


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
    config = load_config(args.config, args.set)
    run_dir = Path(args.out) if args.out else Path("runs") / config.name
    stages = args.stages.split(",") if args.stages else None
    results = run_pipeline(config, run_dir, stages=stages, data_override=args.data, force=args.force,
                           reuse=args.reuse)
    for name, result in results.items():
        state = "skipped (done)" if result.get("skipped") else f"{result.get('seconds', 0):.1f} s"
        print(f"[{name}] {state}: " + json.dumps({k: v for k, v in result.items() if k not in ("skipped", "seconds")}))
    print(f"run directory: {run_dir.resolve()}")
    if "report" in results:
        print(f"report:  {Path(results['report']['report']).resolve()}")
        print(f"package: {Path(results['report']['package']).resolve()}  (diffdefect-edge run --model PKG --source ...)")
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from training.evaluation.ablation import run_ablations

    config = load_config(args.config, args.set)
    run_dir = Path(args.out) if args.out else Path("runs") / config.name
    variants = args.variants.split(",") if args.variants else None
    path = run_ablations(config, run_dir, variants=variants, data_override=args.data)
    print(path.read_text())
    print(f"ablation table: {path.resolve()}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from training.evaluation.compare import run_compare

    config = load_config(args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / config.name / "compare"
    variants = args.variants.split(",") if args.variants else None
    command = "python -m training " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["compare"] else None
    path = run_compare(config, args.seeds, out, variants=variants, data_override=args.data, command=command)
    print(path.read_text())
    print(f"comparison: {path.resolve()}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from training.data import split_dataset
    from training.detector.trainer import Trainer
    from training.engine.distributed import barrier, cleanup, init_distributed

    config = load_config(args.config, args.set)
    if args.epochs is not None:
        config.train.epochs = args.epochs
    run_dir = Path(args.out)
    dist_info = init_distributed()
    if args.data:
        data_dir = Path(args.data)
    elif config.data.source == "synthetic":
        data_dir = run_dir / "data" / "synthetic"
        if dist_info.is_main and not (data_dir / "synth.json").is_file():
            write_configured_synthetic(config, data_dir)
        barrier(dist_info)
    else:
        data_dir = Path(config.data.source)
    cfg = config.data
    dataset = load_dataset(data_dir, format=cfg.format, class_names=cfg.class_names, on_error=cfg.on_error)
    train, val = split_dataset(dataset, cfg.val_fraction, seed=config.seed)
    info = {"path": str(data_dir.resolve()), "format": cfg.format}
    try:
        result = Trainer(config, train, val, run_dir, resume=True if args.resume else False, dataset_info=info).fit()
    finally:
        cleanup(dist_info)
    if dist_info.is_main:
        print(f"trained {result.epochs} epochs ({result.seconds_per_epoch:.1f} s/epoch, {result.world_size} "
              f"process(es)); best epoch {result.best_epoch}: mAP50 {result.best_metrics.get('map50', 0):.4f} "
              f"mAP50:95 {result.best_metrics.get('map50_95', 0):.4f}")
        print(f"run directory: {run_dir.resolve()}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from training.export.package import export_package

    pkg = export_package(args.run, args.out, int8=args.int8, fp16=args.fp16, weights=args.weights,
                         calibration_images=args.calibration_images, calib_data=args.calib_data,
                         overwrite=args.overwrite, sign_key=args.sign)
    print(f"wrote package {pkg.path}: " + ", ".join(f"{m.backend}/{m.precision}" for m in pkg.models))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from training.evaluation.package_eval import evaluate_package

    backends = tuple(args.backends.split(","))
    summary = evaluate_package(args.package, args.data, args.out, split_file=args.split, subset=args.subset,
                               backends=backends, latency_runs=args.latency_runs)
    for key, res in summary["models"].items():
        print(f"{key:18s} mAP50 {res['map50']:.4f}  mAP50:95 {res['map50_95']:.4f}  "
              f"latency {res['latency']['median_ms']:.2f} ms")
    print(f"report: {Path(args.out).resolve() / 'report.md'}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from training.evaluation.calibration import calibrate_package, render

    rule, target = (("target_recall", args.target_recall) if args.target_recall is not None
                    else ("max_false_alarm", args.max_false_alarm))
    summary = calibrate_package(args.package, args.data, rule, target, split_file=args.split, subset=args.subset,
                                sign_key=args.sign, write=not args.dry_run)
    text = render(summary)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    if not args.dry_run:
        print(f"thresholds written into {args.package}")
    return 0


def _add_config_arguments(p: argparse.ArgumentParser) -> None:
    """--config, --set and --data: what every command that runs a config takes."""
    p.add_argument("--config", required=True)
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="override config values, e.g. --set "
                   "train.epochs=15 ddpm.epochs=8 (YAML values; the run directory records the result)")
    p.add_argument("--data", help="dataset folder (overrides the config's data.source)")
    _add_threads_argument(p)


def _add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, help="compute threads for this process (default: train.num_threads, "
                   "else OMP_NUM_THREADS, else the usable cores / processes)")


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
    _add_config_arguments(p)
    p.add_argument("--out", help="run directory (default runs/<config name>)")
    p.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGE_NAMES)}")
    p.add_argument("--force", action="store_true",
                   help="rerun the stages from scratch even if done with this config (their directories are cleared)")
    p.add_argument("--reuse", metavar="RUN", help="link the completed stages of run directory RUN that this config "
                   "would compute identically (e.g. a teacher experiment on another run's DDPM and baseline)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("ablate", help="run the ablation grid of a config and write one table")
    _add_config_arguments(p)
    p.add_argument("--out", help="base run directory (default runs/<config name>); variants go under ablate/")
    p.add_argument("--variants", help="comma-separated subset of full,no_fft_filter,no_resvae,no_gate,"
                                      "feature_kd_only,response_kd_only,self_distill,continued_baseline")
    p.set_defaults(func=_cmd_ablate)

    p = sub.add_parser("compare", help="baseline, teacher, student and the controls over several seeds: "
                                       "compare.md with mean +- std (resumable)")
    _add_config_arguments(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="detector seeds (train.seed)")
    p.add_argument("--out", help="directory (default runs/<config name>/compare)")
    p.add_argument("--variants", help="comma-separated (default full,self_distill,continued_baseline); any "
                                      "ablation variant may be added")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("train", help="train the detector (also under torchrun --nproc-per-node N)")
    _add_config_arguments(p)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export", help="export a training run into a model package")
    p.add_argument("--run", required=True, help="training run directory")
    p.add_argument("--out", required=True, help="package directory to write")
    p.add_argument("--int8", action="store_true", help="add an INT8 OpenVINO IR (NNCF, calibrated on train images)")
    p.add_argument("--fp16", action="store_true", help="add an FP16-compressed OpenVINO IR")
    p.add_argument("--weights", default="best", choices=("best", "last"))
    p.add_argument("--calibration-images", type=int, default=200)
    p.add_argument("--calib-data", help="dataset folder for INT8 calibration (default: the run's training data)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out package")
    p.add_argument("--sign", metavar="KEY.pem", help="sign the package with this PEM private key")
    _add_threads_argument(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("eval", help="evaluate a model package on a dataset: metrics.json + report.md")
    p.add_argument("--package", required=True)
    p.add_argument("--data", required=True, help="dataset folder (any supported format)")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--split", help="split.json (from a run's data stage) to evaluate one subset")
    p.add_argument("--subset", default="val")
    p.add_argument("--backends", default="openvino,onnxruntime", help="comma-separated backends to evaluate")
    p.add_argument("--latency-runs", type=int, default=50)
    _add_threads_argument(p)
    p.set_defaults(func=_cmd_eval)
    p = sub.add_parser("calibrate", help="pick per-class OK/NG thresholds on a labelled set, write them into a "
                                         "package")
    p.add_argument("--package", required=True)
    p.add_argument("--data", required=True, help="labelled dataset folder (any supported format)")
    rule = p.add_mutually_exclusive_group(required=True)
    rule.add_argument("--target-recall", type=float, metavar="R", help="per class, the highest threshold that "
                      "finds this fraction of its defects")
    rule.add_argument("--max-false-alarm", type=float, metavar="F", help="at most this fraction of defect-free "
                      "images called NG")
    p.add_argument("--split", help="split.json (from a run's data stage) to calibrate on one subset")
    p.add_argument("--subset", default="val")
    p.add_argument("--sign", metavar="KEY.pem", help="renew the package's signature with this key")
    p.add_argument("--out", help="also write the calibration table (markdown) here")
    p.add_argument("--dry-run", action="store_true", help="measure and print, write nothing")
    _add_threads_argument(p)
    p.set_defaults(func=_cmd_calibrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        set_command_line_threads(getattr(args, "threads", None))
        return int(args.func(args))
    except (DatasetError, ConfigError, FileExistsError, FileNotFoundError, ValueError, RuntimeError) as exc:
        # PackageError is a ValueError: a bad package or key ends here too, as one line
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        set_command_line_threads(None)  # main() may run again in this process (tests, notebooks)
