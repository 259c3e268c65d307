"""The detector family: sizes, outputs, features, assignment and losses."""

from __future__ import annotations

import math

import pytest
import torch

from training.detector import DefectDetector, DetectorSpec, count_parameters, make_anchors
from training.detector.assigner import TaskAlignedAssigner
from training.detector.boxes import aligned_iou, pairwise_iou
from training.detector.loss import DetectionLoss


def test_sizes_have_the_documented_parameter_counts():
    n = count_parameters(DefectDetector(DetectorSpec(6, "n")))
    s = count_parameters(DefectDetector(DetectorSpec(6, "s")))
    assert 1.0e6 <= n <= 2.0e6
    assert s > 2 * n


def test_dense_n_model_has_no_depthwise_conv_and_fits_the_flops_budget(tmp_path):
    from training.detector.checkpoint import checkpoint_meta, load_detector
    from training.detector.model import count_gflops
    from training.engine.checkpoint import save_weights

    dense = DefectDetector(DetectorSpec(6, "n", depthwise=False))
    grouped = [m for m in dense.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert grouped == []
    assert any(m.groups > 1 for m in DefectDetector(DetectorSpec(6, "n")).modules() if isinstance(m, torch.nn.Conv2d))
    assert count_gflops(dense, 224) <= 1.0
    # the flag travels with the checkpoint: the same layout is rebuilt
    save_weights(tmp_path / "w.safetensors", dense.state_dict(), checkpoint_meta(dense.spec, list("abcdef"), {},
                                                                                 input_size=224))
    loaded, _ = load_detector(tmp_path / "w.safetensors")
    assert loaded.spec.depthwise is False and count_parameters(loaded) == count_parameters(dense)


def test_depthwise_heads_on_a_dense_model_puts_grouped_convs_in_the_heads_alone(tmp_path):
    from training.detector.checkpoint import checkpoint_meta, load_detector
    from training.detector.model import count_gflops
    from training.engine.checkpoint import save_weights

    hybrid = DefectDetector(DetectorSpec(6, "n", depthwise=False, depthwise_heads=True))
    grouped = {name.split(".")[0] for name, m in hybrid.named_modules()
               if isinstance(m, torch.nn.Conv2d) and m.groups > 1}
    assert grouped == {"heads"}
    dense = DefectDetector(DetectorSpec(6, "n", depthwise=False))
    assert count_gflops(hybrid, 224) < 0.8 * count_gflops(dense, 224)
    assert DetectorSpec(6, depthwise=False).heads_depthwise is False and DetectorSpec(6).heads_depthwise is True
    save_weights(tmp_path / "w.safetensors", hybrid.state_dict(),
                 checkpoint_meta(hybrid.spec, list("abcdef"), {}, input_size=224))
    loaded, _ = load_detector(tmp_path / "w.safetensors")
    assert loaded.spec == hybrid.spec


@pytest.mark.parametrize("reg_max", [16, 1])
def test_outputs_and_neck_features(reg_max):
    model = DefectDetector(DetectorSpec(3, "n", reg_max=reg_max, seg_head=True)).eval()
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        out = model(x)
    anchors = (128 // 8) * (96 // 8) + (128 // 16) * (96 // 16) + (128 // 32) * (96 // 32)
    assert out.cls_logits.shape == (2, anchors, 3)
    assert out.box_dist.shape == (2, anchors, 4 * reg_max)
    assert out.seg_logits.shape == (2, 4, 16, 12)
    assert [f.shape[-1] for f in out.features] == [12, 6, 3]
    assert [f.shape[1] for f in out.features] == model.feature_channels
    feats = model.neck_features(x)
    assert all(torch.allclose(a, b) for a, b in zip(feats, out.features))


def test_fuse_hook_rewrites_features_before_the_heads():
    model = DefectDetector(DetectorSpec(2, "n")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
        shifted = model(x, fuse=lambda feats: [f + 5.0 for f in feats])
    assert not torch.allclose(plain.cls_logits, shifted.cls_logits)
    assert torch.allclose(shifted.features[0], plain.features[0] + 5.0)


def test_bad_specs_and_inputs_are_refused():
    with pytest.raises(ValueError, match="size"):
        DetectorSpec(6, "xl")
    with pytest.raises(ValueError, match="num_classes"):
        DetectorSpec(0)
    with pytest.raises(ValueError, match="multiples of 32"):
        DefectDetector(DetectorSpec(2))(torch.zeros(1, 3, 100, 96))


def test_box_iou_variants_match_hand_computed_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    assert pairwise_iou(a, b).item() == pytest.approx(1 / 7)
    # enclosing box 3x3 = 9, union 7 -> GIoU = 1/7 - 2/9
    assert aligned_iou(a, b, "giou").item() == pytest.approx(1 / 7 - 2 / 9, abs=1e-6)
    # same aspect ratio: CIoU = IoU - centre distance^2 / diagonal^2 = 1/7 - 2/18
    assert aligned_iou(a, b, "ciou").item() == pytest.approx(1 / 7 - 2 / 18, abs=1e-6)
    assert aligned_iou(a, a, "ciou").item() == pytest.approx(1.0, abs=1e-6)


def test_assigner_picks_anchors_inside_the_box_and_scales_targets_by_quality():
    anchors, _ = make_anchors(64)
    a = len(anchors)
    gt = torch.tensor([[[8.0, 8.0, 40.0, 40.0], [0, 0, 0, 0]]])
    labels = torch.tensor([[1, 0]])
    valid = torch.tensor([[True, False]])
    pred_boxes = gt[:, :1].expand(1, a, 4).clone()  # every anchor predicts the box exactly
    scores = torch.full((1, a, 2), 0.5)
    asg = TaskAlignedAssigner(topk=5)(scores, pred_boxes, anchors, labels, gt, valid)
    fg = asg.fg_mask[0]
    assert fg.sum() == 5
    centres = anchors[fg]
    assert torch.all((centres > 8) & (centres < 40))
    assert torch.allclose(asg.target_scores[0, fg, 1].max(), torch.tensor(1.0))  # best anchor: the box's IoU
    assert torch.all(asg.target_scores[0, fg, 1] > 0)
    assert torch.all(asg.target_scores[0, fg, 0] == 0)
    assert torch.all(asg.target_scores[0, ~fg] == 0)


@pytest.mark.parametrize("alpha, winner", [(1.0, "confident"), (0.0, "accurate")])
def test_assigner_alpha_trades_score_against_iou(alpha, winner):
    """Two anchors inside one box: one scores high with a loose box, one scores low with an exact box. alpha
    weighs the score in score**alpha * IoU**beta, so it decides which one a top-1 assignment takes."""
    anchors, _ = make_anchors(64)
    a = len(anchors)
    gt = torch.tensor([[[8.0, 8.0, 40.0, 40.0]]])
    inside = ((anchors > 8) & (anchors < 40)).all(-1).nonzero()[:, 0]
    confident, accurate = int(inside[0]), int(inside[1])
    pred_boxes = torch.zeros(1, a, 4)
    pred_boxes[0, confident] = torch.tensor([8.0, 8.0, 40.0, 36.0])  # IoU 0.875
    pred_boxes[0, accurate] = gt[0, 0]  # IoU 1
    scores = torch.full((1, a, 1), 1e-3)
    scores[0, confident], scores[0, accurate] = 0.9, 0.3  # 0.9 * 0.875**6 = 0.40 > 0.3; 0.875**6 < 1
    asg = TaskAlignedAssigner(topk=1, alpha=alpha)(scores, pred_boxes, anchors, torch.tensor([[0]]), gt,
                                                   torch.tensor([[True]]))
    assert asg.fg_mask[0].nonzero()[:, 0].tolist() == [{"confident": confident, "accurate": accurate}[winner]]


def test_loss_takes_the_configured_weights_and_assigner():
    from training.config import AssignerConfig, LossWeights

    torch.manual_seed(0)
    out = DefectDetector(DetectorSpec(2, "n"))(torch.randn(1, 3, 64, 64))
    batch = {"boxes": torch.tensor([[[8.0, 8.0, 40.0, 30.0]]]), "labels": torch.tensor([[1]]),
             "valid": torch.ones(1, 1, dtype=torch.bool)}
    total, parts = DetectionLoss(2, 16, 64)(out, batch)
    assert float(total) == pytest.approx(7.5 * parts["box"] + 0.5 * parts["cls"] + 1.5 * parts["dfl"], rel=1e-5)
    cls_only, _ = DetectionLoss(2, 16, 64, weights=LossWeights(box=0, cls=2, dfl=0))(out, batch)
    assert float(cls_only) == pytest.approx(2 * parts["cls"], rel=1e-5)
    loss = DetectionLoss(2, 16, 64, assigner=AssignerConfig(topk=3, alpha=0.5, beta=4.0))
    assert (loss.assigner.topk, loss.assigner.alpha, loss.assigner.beta) == (3, 0.5, 4.0)


def test_padding_boxes_never_get_anchors():
    anchors, _ = make_anchors(64)
    gt = torch.zeros(1, 3, 4)
    asg = TaskAlignedAssigner()(torch.rand(1, len(anchors), 2), torch.rand(1, len(anchors), 4) * 64, anchors,
                                torch.zeros(1, 3, dtype=torch.long), gt, torch.zeros(1, 3, dtype=torch.bool))
    assert not asg.fg_mask.any()


@pytest.mark.parametrize("cls_loss,box_loss", [("varifocal", "ciou"), ("bce", "giou")])
def test_loss_is_finite_and_training_steps_reduce_it(cls_loss, box_loss):
    torch.manual_seed(0)
    model = DefectDetector(DetectorSpec(2, "n", seg_head=True))
    loss_fn = DetectionLoss(2, 16, 64, cls_loss, box_loss)
    batch = {"boxes": torch.tensor([[[8.0, 8.0, 40.0, 30.0]], [[20.0, 24.0, 60.0, 60.0]]]),
             "labels": torch.tensor([[0], [1]]), "valid": torch.ones(2, 1, dtype=torch.bool),
             "masks": torch.zeros(2, 64, 64, dtype=torch.uint8)}
    batch["masks"][0, 8:30, 8:40] = 1
    x = torch.randn(2, 3, 64, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss, parts = loss_fn(model(x), batch)
        assert math.isfinite(float(loss.detach())) and set(parts) == {"box", "cls", "dfl", "seg"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_loss_without_boxes_is_classification_only():
    model = DefectDetector(DetectorSpec(2, "n"))
    loss_fn = DetectionLoss(2, 16, 64)
    batch = {"boxes": torch.zeros(1, 1, 4), "labels": torch.zeros(1, 1, dtype=torch.long),
             "valid": torch.zeros(1, 1, dtype=torch.bool)}
    loss, parts = loss_fn(model(torch.randn(1, 3, 64, 64)), batch)
    assert parts["box"] == 0 and parts["dfl"] == 0 and parts["cls"] > 0
    loss.backward()
