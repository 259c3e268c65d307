"""Datasets: one record type, loaders for VOC/COCO/YOLO/Tianchi, the synthetic generator, splits."""

from training.data.formats import FORMATS, detect_format, load_dataset
from training.data.records import Dataset, DatasetError, Record, SkipReport
from training.data.splits import split_dataset
from training.data.synthetic import CLASS_NAMES, SynthConfig, synthesize_image, write_synthetic_dataset

__all__ = [
    "CLASS_NAMES", "FORMATS", "Dataset", "DatasetError", "Record", "SkipReport", "SynthConfig",
    "detect_format", "load_dataset", "split_dataset", "synthesize_image", "write_synthetic_dataset",
]
