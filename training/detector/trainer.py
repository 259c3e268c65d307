"""Detector training: AdamW/SGD with warm-up + cosine, EMA weights, augmentations, validation mAP with
best-checkpoint keeping, resume, a per-epoch metrics CSV, and DistributedDataParallel under torchrun.

Run directory written by :class:`Trainer` (rank 0 only):

    RUN/config.yaml          the experiment config it ran with
    RUN/dataset.json         dataset path, format, class names, train/val image ids
    RUN/weights/last.safetensors, best.safetensors   deployable (EMA) weights + spec + config
    RUN/weights/last_state.pt                        optimizer, raw weights, epoch (for --resume)
    RUN/metrics.csv          one row per epoch
    RUN/summary.json         best metrics, timing, world size
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from diffdefect_edge.preprocess import MEAN, STD
from training.config import ExperimentConfig, save_config
from training.data.records import Dataset
from training.data.torch_dataset import DetectionDataset, collate, to_model_input
from training.detector import DefectDetector, DetectorOutput, DetectorSpec
from training.detector.checkpoint import checkpoint_meta
from training.detector.loss import DetectionLoss
from training.engine.checkpoint import save_train_state, save_weights
from training.engine.distributed import DistInfo, all_gather_floats, barrier, init_distributed
from training.engine.ema import ModelEMA, tau_decay
from training.engine.loop import TrainLoop
from training.engine.resume import resume_state
from training.engine.schedule import WarmupCosine
from training.engine.threads import apply_thread_budget
from training.evaluation.metrics import DetectionMetrics, evaluate_detections
from training.evaluation.torch_predict import predict_records

log = logging.getLogger(__name__)

CSV_FIELDS = ["epoch", "lr", "loss", "box", "cls", "dfl", "seg", "kd_feat", "kd_resp", "seconds", "map50", "map50_95"]


def model_spec(config: ExperimentConfig, dataset: Dataset) -> DetectorSpec:
    has_masks = any(r.mask_path is not None for r in dataset.records)
    seg = {"on": True, "off": False, "auto": has_masks}[config.model.seg_head]
    return DetectorSpec(num_classes=len(dataset.class_names), size=config.model.size,
                        reg_max=config.model.reg_max, seg_head=seg, depthwise=config.model.depthwise,
                        depthwise_heads=config.model.depthwise_heads)


@dataclass
class TrainResult:
    run_dir: Path
    epochs: int
    best_epoch: int
    best_metrics: dict[str, Any]
    seconds_per_epoch: float
    world_size: int
    parameters: int
    seconds_per_validation: float = 0.0  # one validation pass (0 where none ran in this process)


def build_optimizer(model: nn.Module, cfg, warmup_bias_lr: float | None = None) -> torch.optim.Optimizer:
    """No weight decay on norms and biases; with ``warmup_bias_lr`` the biases warm up from that rate down to
    the schedule's (see ``WarmupCosine.group_rate``)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append((name, p))
    groups = [{"params": [p for _, p in decay], "weight_decay": cfg.weight_decay}]
    if warmup_bias_lr is None:  # the two groups, in the order, of runs saved before the bias warm-up (they resume)
        groups.append({"params": [p for _, p in no_decay], "weight_decay": 0.0})
    else:
        groups += [{"params": [p for n, p in no_decay if not n.endswith(".bias")], "weight_decay": 0.0},
                   {"params": [p for n, p in no_decay if n.endswith(".bias")], "weight_decay": 0.0,
                    "warmup_from": warmup_bias_lr}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


class TeacherSchedule:
    """The schedule of the stages that train a trained baseline on (the teacher, the ``continued`` control):
    ``teacher.epochs`` at ``teacher.lr``, each falling back to the ``train`` value."""

    config: ExperimentConfig

    @property
    def epochs(self) -> int:
        return self.config.teacher.epochs or self.config.train.epochs

    @property
    def base_lr(self) -> float:
        return self.config.teacher.lr or self.config.train.lr


class Trainer:
    """Trains one detector on (train, val). Subclasses change :meth:`compute_loss` (distillation does)."""

    resume_sections: tuple[str, ...] = ("data", "model")  # config sections a resumed run must share

    def __init__(self, config: ExperimentConfig, train_set: Dataset, val_set: Dataset, run_dir: str | Path,
                 resume: bool | str = "auto", dataset_info: dict[str, Any] | None = None) -> None:
        self.config, self.train_set, self.val_set = config, train_set, val_set
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.dataset_info = dataset_info or {"path": str(train_set.root) if train_set.root else None,
                                             "format": train_set.format}
        self.dist: DistInfo = init_distributed()
        self.spec = model_spec(config, train_set)
        self.input_size = config.model.input_size
        self.class_names = list(train_set.class_names)

    # ---- pieces subclasses may extend ----
    def build_model(self) -> DefectDetector:
        torch.manual_seed(self.config.detector_seed)
        return DefectDetector(self.spec)

    def forward(self, model: nn.Module, images: torch.Tensor, batch: dict[str, torch.Tensor]) -> DetectorOutput:
        return model(images)

    def compute_loss(self, out: DetectorOutput, images: torch.Tensor, batch: dict[str, torch.Tensor]
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss_fn(out, batch)

    def dataset_options(self) -> dict[str, Any]:
        """Extra DetectionDataset arguments (the teacher asks for each item's augmentation matrix)."""
        return {}

    def eval_forward(self):
        """How validation runs the model (None: ``model(x)``); see ``predict_records(forward=...)``."""
        return None

    @property
    def epochs(self) -> int:
        return self.config.train.epochs

    @property
    def base_lr(self) -> float:
        return self.config.train.lr

    @property
    def warmup_bias_lr(self) -> float | None:
        """The biases' warm-up start rate: for a detector trained from scratch (stages starting from trained
        weights return None: a high bias rate would undo them)."""
        return self.config.train.warmup_bias_lr

    # ---- files ----
    @property
    def weights_dir(self) -> Path:
        return self.run_dir / "weights"

    def _config_hash(self) -> str:
        """What a resumed run must share with the checkpoint (epochs may grow: resuming to train longer is fine)."""
        train = {k: v for k, v in asdict(self.config.train).items() if k not in ("epochs", "eval_every", "workers")}
        return self.config.section_hash(*self.resume_sections, extra={"train": train})

    def _prepare_run_dir(self) -> dict[str, Any] | None:
        """Return the training state to resume from, or None to start fresh (refusing to clobber a run)."""
        return resume_state(self.weights_dir / "last_state.pt", self._config_hash(), self.resume, self.run_dir)

    def _write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.run_dir / "config.yaml")
        info = {**self.dataset_info, "class_names": self.class_names,
                "train": [r.image_id for r in self.train_set.records],
                "val": [r.image_id for r in self.val_set.records]}
        (self.run_dir / "dataset.json").write_text(json.dumps(info, indent=1))

    def _meta(self, **extra: Any) -> dict[str, Any]:
        return checkpoint_meta(self.spec, self.class_names, self.config.to_dict(), input_size=self.input_size,
                               mean=list(MEAN), std=list(STD), **extra)

    # ---- the loop ----
    def evaluate(self, model: nn.Module) -> DetectionMetrics:
        preds = predict_records(model, self.val_set.records, self.input_size, device=self.dist.device,
                                forward=self.eval_forward())
        return evaluate_detections(self.val_set.records, self.class_names, preds)

    def fit(self) -> TrainResult:
        cfg, tcfg, dist_info = self.config, self.config.train, self.dist
        threads = apply_thread_budget(self.run_dir.name, tcfg.num_threads, dist_info.world_size, tcfg.workers)
        state = self._prepare_run_dir()
        if dist_info.is_main:
            self._write_run_files()
        barrier(dist_info)

        model = self.build_model().to(dist_info.device)
        ema = ModelEMA(model, tau_decay(tcfg.ema_decay, tcfg.ema_tau)) if tcfg.ema else None
        optimizer = build_optimizer(model, tcfg, self.warmup_bias_lr)
        self.loss_fn = DetectionLoss(self.spec.num_classes, self.spec.reg_max, self.input_size, tcfg.cls_loss,
                                     tcfg.box_loss, tcfg.loss_weights, tcfg.assigner)
        data = DetectionDataset(self.train_set.records, self.input_size, tcfg.augment, with_masks=self.spec.seg_head,
                                cache=tcfg.cache_images, seed=cfg.detector_seed, **self.dataset_options())
        sampler = (DistributedSampler(data, shuffle=True, seed=cfg.detector_seed, drop_last=True) if dist_info.enabled
                   else RandomSampler(data, generator=torch.Generator().manual_seed(cfg.detector_seed)))
        batch = max(1, tcfg.batch_size // dist_info.world_size)
        loader = DataLoader(data, batch_size=batch, sampler=sampler, collate_fn=collate, drop_last=len(data) > batch,
                            num_workers=tcfg.workers, persistent_workers=tcfg.workers > 0)
        train_model: nn.Module = DistributedDataParallel(model) if dist_info.enabled else model
        iters = len(loader)
        schedule = WarmupCosine(self.base_lr, self.epochs * iters, round(tcfg.warmup_epochs * iters),
                                tcfg.final_lr_ratio, warmup="ramp")
        loop = TrainLoop(model, optimizer, schedule, clip_norm=10.0, ema=ema, show_progress=dist_info.is_main)
        start_epoch, best_fitness, best_epoch, best_metrics = 0, -1.0, -1, {}
        if state is not None:
            start_epoch = loop.restore(state)
            best_fitness, best_epoch = float(state["best_fitness"]), int(state["best_epoch"])
            best_metrics = json.loads(state["best_metrics"])
            log.info("resuming %s from epoch %d", self.run_dir, start_epoch)
        csv_path = self.run_dir / "metrics.csv"
        if dist_info.is_main and (state is None or not csv_path.is_file()):
            with csv_path.open("w", newline="") as f:
                csv.DictWriter(f, CSV_FIELDS).writeheader()

        def step(batch_data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
            images = to_model_input(batch_data["images"].to(dist_info.device), MEAN, STD)
            batch_data = {k: v.to(dist_info.device) for k, v in batch_data.items()}
            out = self.forward(train_model, images, batch_data)
            loss, parts = self.compute_loss(out, images, batch_data)
            return loss, {"loss": float(loss.detach()) / images.shape[0], **parts}

        epoch_seconds: list[float] = []
        validation_seconds: list[float] = []
        for epoch in range(start_epoch, self.epochs):
            if isinstance(sampler, DistributedSampler):
                sampler.set_epoch(epoch)
            else:
                sampler.generator.manual_seed(cfg.detector_seed + epoch)
            data.set_epoch(epoch, mosaic=epoch < self.epochs - tcfg.augment.close_mosaic)
            train_model.train()
            t0 = time.perf_counter()
            sums = loop.run_epoch(epoch, loader, iters, step, desc=f"{self.run_dir.name} {epoch + 1}/{self.epochs}",
                                  sums={"loss": 0.0, "box": 0.0, "cls": 0.0, "dfl": 0.0, "seg": 0.0})
            seconds = time.perf_counter() - t0
            epoch_seconds.append(seconds)
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": round(loop.lr, 6), "seconds": round(seconds, 2),
                                   **{k: round(v / max(1, iters), 5) for k, v in sums.items() if k in CSV_FIELDS}}
            deploy = ema.module if ema is not None else model
            last = epoch + 1 == self.epochs
            if dist_info.is_main:
                if (epoch + 1) % tcfg.eval_every == 0 or last:
                    t_val = time.perf_counter()
                    metrics = self.evaluate(deploy)
                    validation_seconds.append(time.perf_counter() - t_val)
                    row.update(map50=round(metrics.map50, 5), map50_95=round(metrics.map50_95, 5))
                    fitness = 0.1 * metrics.map50 + 0.9 * metrics.map50_95
                    log.info("epoch %d: loss %.4f  mAP50 %.4f  mAP50:95 %.4f  (%.1f s)", epoch + 1, row["loss"],
                             metrics.map50, metrics.map50_95, seconds)
                    if fitness > best_fitness:
                        best_fitness, best_epoch, best_metrics = fitness, epoch + 1, metrics.to_dict()
                        save_weights(self.weights_dir / "best.safetensors", deploy.state_dict(),
                                     self._meta(epoch=epoch + 1, metrics=best_metrics))
                save_weights(self.weights_dir / "last.safetensors", deploy.state_dict(), self._meta(epoch=epoch + 1))
                save_train_state(self.weights_dir / "last_state.pt", loop.state(
                    epoch, self._config_hash(), best_fitness=best_fitness, best_epoch=best_epoch,
                    best_metrics=json.dumps(best_metrics)))
                with csv_path.open("a", newline="") as f:
                    csv.DictWriter(f, CSV_FIELDS).writerow(row)
            barrier(dist_info)

        checksums = all_gather_floats(dist_info, float(sum(p.detach().double().sum() for p in model.parameters())))
        per_epoch = sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds else 0.0
        per_validation = sum(validation_seconds) / len(validation_seconds) if validation_seconds else 0.0
        result = TrainResult(self.run_dir, self.epochs, best_epoch, best_metrics, per_epoch, dist_info.world_size,
                             sum(p.numel() for p in model.parameters()), per_validation)
        if dist_info.is_main:
            summary = {"epochs": self.epochs, "best_epoch": best_epoch, "best_metrics": best_metrics,
                       "seconds_per_epoch": round(per_epoch, 3),
                       "seconds_per_validation": round(result.seconds_per_validation, 3),
                       "world_size": dist_info.world_size,
                       "threads_per_process": threads, "parameters": result.parameters,
                       "param_checksum_per_rank": checksums}
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        barrier(dist_info)
        return result
