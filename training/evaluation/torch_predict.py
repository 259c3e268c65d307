"""Run a torch detector over records and decode exactly as the SDK does (letterbox, decode, NMS)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from diffdefect_edge.postprocess import decode_detections
from diffdefect_edge.preprocess import MEAN, STD, letterbox
from training.data.records import Record
from training.data.torch_dataset import read_image, to_model_input
from training.detector import DefectDetector, DetectorOutput
from training.evaluation.metrics import Prediction

# (model, normalised canvases, the records they show) -> output; the teacher looks up its DDPM features here
ForwardFn = Callable[[torch.nn.Module, torch.Tensor, list[Record]], DetectorOutput]

EVAL_CONF = 0.001  # mAP is computed over the whole precision-recall curve
EVAL_IOU = 0.6


@torch.no_grad()
def predict_records(model: DefectDetector, records: list[Record], input_size: int, conf: float = EVAL_CONF,
                    iou: float = EVAL_IOU, batch_size: int = 16, device: torch.device | None = None,
                    forward: ForwardFn | None = None) -> list[Prediction]:
    """Predictions in frame pixels for every record (``image_index`` = position in ``records``)."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    preds: list[Prediction] = []
    starts = range(0, len(records), batch_size)
    for start in tqdm(starts, desc="validation", leave=False, mininterval=1.0, unit="batch"):
        chunk = records[start:start + batch_size]
        canvases, boxes_maps = [], []
        for rec in chunk:
            canvas, lb = letterbox(read_image(str(rec.image_path)), input_size)
            canvases.append(canvas)
            boxes_maps.append(lb)
        x = to_model_input(torch.from_numpy(np.stack(canvases)).to(device), MEAN, STD)
        out = forward(model, x, chunk) if forward is not None else model(x)
        raw = model.decode(out, input_size).float().cpu().numpy()
        for offset, (lb, raw_one) in enumerate(zip(boxes_maps, raw)):
            boxes, scores, classes = decode_detections(raw_one, conf, iou, multi_label=True)
            boxes = lb.boxes_to_frame(boxes)
            preds += [Prediction(start + offset, int(c), tuple(float(v) for v in b), float(s))
                      for b, s, c in zip(boxes, scores, classes)]
    model.train(was_training)
    return preds
