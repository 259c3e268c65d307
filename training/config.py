"""Experiment configuration: YAML files parsed into dataclasses (unknown keys are errors)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from training.data.augment import AugmentConfig


class ConfigError(ValueError):
    pass


@dataclass
class SyntheticDataConfig:
    num_images: int = 240
    size: int = 200
    contrast: tuple[float, float] = (0.15, 1.0)
    max_defects: int = 3
    background_fraction: float = 0.1


@dataclass
class DataConfig:
    source: str = "synthetic"  # "synthetic" or a dataset path (VOC/COCO/YOLO/Tianchi)
    format: str = "auto"
    class_names: list[str] | None = None
    on_error: str = "raise"  # or "skip" (reported)
    val_fraction: float = 0.2
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)


@dataclass
class ModelConfig:
    size: str = "n"  # width/depth multipliers: n (~1.3 M parameters), s (~5 M), m (~14 M)
    input_size: int = 224  # square canvas, multiple of 32
    reg_max: int = 16  # box bins per side (distribution focal loss); 1 = direct distances
    seg_head: str = "auto"  # "auto" (when the dataset has masks), "on" or "off"
    depthwise: bool = True  # depthwise-separable convs in the deep stages, neck and heads; false = dense convs
    depthwise_heads: bool | None = None  # the heads alone (None: as depthwise)

    def __post_init__(self) -> None:
        if self.size not in ("n", "s", "m"):
            raise ConfigError(f"model.size must be 'n', 's' or 'm', got {self.size!r}")
        if self.input_size < 64 or self.input_size % 32:
            raise ConfigError(f"model.input_size must be a multiple of 32 and >= 64, got {self.input_size}")
        if self.reg_max < 1:
            raise ConfigError(f"model.reg_max must be >= 1, got {self.reg_max}")
        if self.seg_head not in ("auto", "on", "off"):
            raise ConfigError(f"model.seg_head must be 'auto', 'on' or 'off', got {self.seg_head!r}")


@dataclass
class LossWeights:
    """Weights of the detection loss's parts (box IoU, classification, distribution focal, segmentation)."""

    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    seg: float = 1.0

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if value < 0:
                raise ConfigError(f"loss_weights.{name} must be >= 0, got {value}")


@dataclass
class AssignerConfig:
    """Task-aligned label assignment: each box takes the ``topk`` candidate anchors by score**alpha * IoU**beta."""

    topk: int = 10
    alpha: float = 1.0
    beta: float = 6.0

    def __post_init__(self) -> None:
        if self.topk < 1:
            raise ConfigError(f"assigner.topk must be >= 1, got {self.topk}")
        if self.alpha < 0 or self.beta < 0:
            raise ConfigError(f"assigner.alpha and assigner.beta must be >= 0, got {self.alpha}, {self.beta}")


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 16
    optimizer: str = "adamw"  # or "sgd"
    lr: float = 0.002
    weight_decay: float = 0.05
    momentum: float = 0.937  # SGD momentum / AdamW beta1
    warmup_epochs: float = 2.0
    warmup_bias_lr: float | None = None  # biases warm up from this rate down to lr (None: like the rest)
    final_lr_ratio: float = 0.05  # cosine decays lr to lr * final_lr_ratio
    ema: bool = True
    ema_decay: float = 0.999
    ema_tau: float = 200.0  # EMA warm-up in updates
    cls_loss: str = "varifocal"  # or "bce"
    box_loss: str = "ciou"  # "giou", "ciou" or "iou"
    loss_weights: LossWeights = field(default_factory=LossWeights)
    assigner: AssignerConfig = field(default_factory=AssignerConfig)
    eval_every: int = 5  # epochs between validation mAP runs (the last epoch always runs one)
    workers: int = 0  # DataLoader worker processes
    cache_images: bool = True  # keep decoded images in memory
    num_threads: int = 0  # threads per process for every stage; 0 = OMP_NUM_THREADS, else usable cores / processes
    seed: int | None = None  # the detector stages' seed (init, sampling, augmentation); None = the config's seed
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "train.epochs must be >= 1"),
            (self.batch_size >= 1, "train.batch_size must be >= 1"),
            (self.optimizer in ("adamw", "sgd"), "train.optimizer must be 'adamw' or 'sgd'"),
            (self.lr > 0, "train.lr must be > 0"),
            (self.warmup_bias_lr is None or self.warmup_bias_lr >= 0, "train.warmup_bias_lr must be >= 0"),
            (self.cls_loss in ("bce", "varifocal"), "train.cls_loss must be 'bce' or 'varifocal'"),
            (self.box_loss in ("iou", "giou", "ciou"), "train.box_loss must be 'iou', 'giou' or 'ciou'"),
            (self.eval_every >= 1, "train.eval_every must be >= 1"),
            (0 <= self.ema_decay < 1, "train.ema_decay must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass
class ExportConfig:
    int8: bool = True  # NNCF post-training quantization of the OpenVINO IR
    fp16: bool = False  # also write an FP16-compressed IR
    calibration_images: int = 200
    conf: float = 0.25  # default thresholds written into the package
    iou: float = 0.5


@dataclass
class DDPMConfig:
    """Stage ``ddpm``: the diffusion model trained on the training images (letterboxed canvases, resized)."""

    image_size: int = 64  # the canvas is resized to this; multiple of 2 ** (levels - 1)
    channels: int = 1  # 1 = grayscale, 3 = RGB
    base_width: int = 32
    width_mults: list[int] = field(default_factory=lambda: [1, 2, 2])
    blocks_per_level: int = 1
    attention_levels: list[int] = field(default_factory=lambda: [2])
    timesteps: int = 1000
    schedule: str = "linear"  # "linear" (1e-4 .. 0.02) or "cosine"
    epochs: int = 40
    batch_size: int = 16
    lr: float = 0.001
    ema_decay: float = 0.995
    hflip: bool = True  # flips are free augmentation for a texture model
    sample_steps: int = 50  # respaced ancestral sampling for the preview grid
    num_samples: int = 16

    def __post_init__(self) -> None:
        factor = 2 ** (len(self.width_mults) - 1)
        checks = [
            (self.channels in (1, 3), "ddpm.channels must be 1 or 3"),
            (self.image_size >= factor and self.image_size % factor == 0,
             f"ddpm.image_size must be a multiple of {factor} (2 ** (levels - 1))"),
            (self.timesteps >= 10, "ddpm.timesteps must be >= 10"),
            (self.schedule in ("linear", "cosine"), "ddpm.schedule must be 'linear' or 'cosine'"),
            (self.epochs >= 1 and self.batch_size >= 1, "ddpm.epochs and ddpm.batch_size must be >= 1"),
            (1 <= self.sample_steps <= self.timesteps, "ddpm.sample_steps must be in [1, timesteps]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass
class FeaturesConfig:
    """Stage ``features``: DDPM activations of every image, hooked from decoder blocks at chosen timesteps."""

    timesteps: list[int] = field(default_factory=lambda: [50, 150, 250])
    blocks: list[str] = field(default_factory=lambda: ["up.1.1", "up.2.1"])  # UNet.decoder_block_names()
    batch_size: int = 16
    chunk_size: int = 64  # images per atomic chunk of the feature store

    def __post_init__(self) -> None:
        if not self.timesteps or not self.blocks:
            raise ConfigError("features.timesteps and features.blocks must not be empty")


@dataclass
class ResVAEConfig:
    """Stage ``resvae``: the residual conv VAE that compresses the raw features into the latent repository."""

    enabled: bool = True  # false: the teacher reads the raw features (ablation "no ResVAE")
    latent_channels: int = 16
    hidden: int = 64
    blocks: int = 1
    downsample: bool = True  # 2x spatial compression
    epochs: int = 40
    batch_size: int = 32
    lr: float = 0.002
    kl_weight: float = 1.0e-4

    def __post_init__(self) -> None:
        if self.latent_channels < 1 or self.hidden < 8 or self.blocks < 0:
            raise ConfigError("resvae.latent_channels >= 1, resvae.hidden >= 8, resvae.blocks >= 0")


@dataclass
class FusionConfig:
    """Stage ``teacher``: how DDPM features are fused into the detector's pyramid levels."""

    levels: list[int] = field(default_factory=lambda: [0])  # 0 = stride 8, 1 = stride 16, 2 = stride 32
    heads: int = 4
    fft_filter: bool = True  # false: ablation "no FFT filter"
    learnable_filter: bool = True
    filter_sigma: float = 0.25  # Gaussian low-pass width at init, in cycles per pixel (Nyquist = 0.5)
    gate: bool = True  # false: ablation "no gate" (attended signal added with weight 1)
    impl: str = "kernel"  # "kernel" (C++/CUDA) or "reference" (pure torch)
    init_from_baseline: bool = True  # start the teacher's detector from the trained baseline, then fine-tune
    epochs: int | None = None  # default: train.epochs
    lr: float | None = None  # default: train.lr

    def __post_init__(self) -> None:
        if not self.levels or any(lv not in (0, 1, 2) for lv in self.levels):
            raise ConfigError("teacher.levels must be a non-empty subset of [0, 1, 2]")
        if self.impl not in ("kernel", "reference"):
            raise ConfigError("teacher.impl must be 'kernel' or 'reference'")
        if self.heads < 1 or self.filter_sigma <= 0:
            raise ConfigError("teacher.heads >= 1 and teacher.filter_sigma > 0")


@dataclass
class DistillConfig:
    """Stage ``distill``: the student trained from the frozen teacher."""

    feature_weight: float = 1.0  # normalised feature distillation on the neck levels
    foreground_weight: float = 4.0  # weight of ground-truth box cells relative to background
    response_weight: float = 1.0  # classification + box-distribution distillation
    temperature: float = 2.0
    epochs: int | None = None  # default: train.epochs
    # "ddpm": the teacher with DDPM features; the controls without them: "baseline" (the trained baseline) or
    # "continued" (the baseline trained on for the teacher's extra epochs: the same total epochs as the teacher)
    teacher: str = "ddpm"

    def __post_init__(self) -> None:
        if self.feature_weight < 0 or self.response_weight < 0 or self.temperature <= 0:
            raise ConfigError("distill weights must be >= 0 and distill.temperature > 0")
        if self.teacher not in ("ddpm", "baseline", "continued"):
            raise ConfigError(f"distill.teacher must be 'ddpm', 'baseline' or 'continued', got {self.teacher!r}")


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    ddpm: DDPMConfig = field(default_factory=DDPMConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    resvae: ResVAEConfig = field(default_factory=ResVAEConfig)
    teacher: FusionConfig = field(default_factory=FusionConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def detector_seed(self) -> int:
        """Seeds the detector stages (baseline, teacher, distillation); ``seed`` alone seeds the split, the DDPM,
        its features and the ResVAE, so ``compare`` can vary the first and share the rest."""
        return self.seed if self.train.seed is None else self.train.seed

    def section_hash(self, *sections: str, extra: dict[str, Any] | None = None) -> str:
        """Stable hash of the named sections, the seed and ``extra``: a stage reruns only when these change."""
        payload = {"seed": self.seed, "extra": extra or {},
                   **{s: dataclasses.asdict(getattr(self, s)) for s in sections}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} (known: {sorted(names)})")
    kwargs = {}
    for key, val in values.items():
        kwargs[key] = _coerce(hints[key], val, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # ConfigError, or a plain ValueError from a dataclass defined outside this module
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(tp: Any, val: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, val, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if val is None else _coerce(args[0], val, where)
    if origin is tuple:
        if not isinstance(val, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {val!r}")
        return tuple(_coerce(a, v, where) for a, v in zip(typing.get_args(tp), val))
    if origin is list:
        if not isinstance(val, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {val!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, where) for v in val]
    if tp is float and isinstance(val, (int, float)) and not isinstance(val, bool):
        return float(val)
    if tp in (int, str, bool) and not isinstance(val, tp) or (tp is int and isinstance(val, bool)):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {val!r}")
    return val


def config_from_dict(values: dict[str, Any], where: str = "config") -> ExperimentConfig:
    return _build(ExperimentConfig, values or {}, where)


def apply_overrides(values: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """``values`` with ``section.key=value`` overrides applied (values are YAML: ``train.epochs=15``,
    ``teacher.levels=[0]``; quote YAML words such as off: ``model.seg_head='"off"'``)."""
    values = copy.deepcopy(values)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=15")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
        *parents, leaf = key.strip().split(".")
        node = values
        for depth, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parents[:depth + 1])} is not a section")
            node = child
        node[leaf] = value
    return values


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment config, with optional ``section.key=value`` overrides; errors name the file and
    the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: broken YAML ({exc})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(values).__name__}")
    try:
        return config_from_dict(apply_overrides(values, overrides), where=str(path))
    except ConfigError as exc:
        if overrides:
            raise ConfigError(f"{exc} (with --set {' '.join(overrides)})") from None
        raise


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(json.loads(json.dumps(config.to_dict())), sort_keys=False))
