"""The teacher's stages: DDPM, feature extraction, ResVAE latents, fusion, augmentation-consistent lookup."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from training.config import ConfigError, config_from_dict
from training.data.augment import AugmentConfig
from training.data.torch_dataset import DetectionDataset
from training.detector import DetectorSpec
from training.diffusion.ddpm import NoiseSchedule, load_ddpm, sample
from training.diffusion.features import FeatureExtractor, image_noise
from training.diffusion.unet import UNet, UNetSpec
from training.repository.store import FeatureRepository
from training.teacher.feature_source import warp_features
from training.teacher.fusion import DynamicCrossAttention, FFTFilter, Fusion, gaussian_lowpass
from training.teacher.model import TeacherDetector, load_teacher
from training.teacher.trainer import TeacherTrainer


def test_noise_schedule_marginals():
    sched = NoiseSchedule(1000, "linear")
    assert sched.alphas_cumprod[0] > 0.999 and sched.alphas_cumprod[-1] < 1e-4
    x0 = torch.full((4000, 1, 1, 1), 0.5)
    xt = sched.q_sample(x0, torch.full((4000,), 500), torch.randn(4000, 1, 1, 1, generator=torch.Generator().manual_seed(0)))
    abar = float(sched.alphas_cumprod[500])
    assert abs(float(xt.mean()) - 0.5 * abar ** 0.5) < 0.05 and abs(float(xt.var()) - (1 - abar)) < 0.05
    with pytest.raises(ValueError, match=r"timesteps must be in \[0, 1000\)"):
        sched.q_sample(x0[:1], torch.tensor([1000]), x0[:1])
    assert NoiseSchedule(100, "cosine").betas.max() <= 0.999
    with pytest.raises(ValueError, match="schedule"):
        NoiseSchedule(100, "quadratic")


def test_unet_shapes_hooks_and_bad_input():
    unet = UNet(UNetSpec(in_channels=1, base_width=16, width_mults=(1, 2, 2), attention_levels=(2,)))
    x = torch.randn(2, 1, 32, 32)
    assert unet(x, torch.tensor([3, 900])).shape == x.shape
    assert unet.decoder_block_names() == ["up.0.0", "up.0.1", "up.1.0", "up.1.1", "up.2.0", "up.2.1"]
    with pytest.raises(ValueError, match="multiples of 4"):
        unet(torch.randn(1, 1, 30, 30), torch.tensor([1]))
    sched = NoiseSchedule(1000)
    ext = FeatureExtractor(unet, sched, [50, 150], ["up.1.1", "up.2.1"], grid=12)
    feats = ext(x, torch.randn_like(x))
    assert feats.shape == (2, 2 * (32 + 16), 12, 12) and ext.channels == 96
    ext.close()
    with pytest.raises(ValueError, match=r"features.blocks \['up.9.0'\]"):
        FeatureExtractor(unet, sched, [50], ["up.9.0"], grid=12)
    with pytest.raises(ValueError, match=r"features.timesteps \[1000\]"):
        FeatureExtractor(unet, sched, [1000], ["up.1.1"], grid=12)
    # the noise draw depends only on (seed, image id): chunking and resuming do not change the features
    assert torch.equal(image_noise(0, "a", (1, 4, 4)), image_noise(0, "a", (1, 4, 4)))
    assert not torch.equal(image_noise(0, "a", (1, 4, 4)), image_noise(0, "b", (1, 4, 4)))


def test_teacher_config_errors():
    with pytest.raises(ConfigError, match="ddpm.image_size must be a multiple of 4"):
        config_from_dict({"ddpm": {"image_size": 30}})
    with pytest.raises(ConfigError, match="teacher.levels"):
        config_from_dict({"teacher": {"levels": [3]}})
    with pytest.raises(ConfigError, match="teacher.impl"):
        config_from_dict({"teacher": {"impl": "cuda"}})
    with pytest.raises(ConfigError, match="features.timesteps"):
        config_from_dict({"features": {"timesteps": []}})


def test_stages_one_to_four_end_to_end(tiny_pipeline_run):
    run, res = tiny_pipeline_run
    samples = cv2.imread(str(run / "ddpm" / "samples.png"), cv2.IMREAD_UNCHANGED)
    assert samples is not None and samples.shape[0] >= 32  # a grid a person can look at
    unet, sched, meta = load_ddpm(run / "ddpm" / "ddpm.safetensors")
    assert sched.timesteps == 1000 and meta["canvas_size"] == 96
    raw = FeatureRepository(run / "features" / "raw")
    assert len(raw) == 16 and raw.shape("features") == (3 * (32 + 16), 12, 12)  # 3 timesteps x 2 blocks, grid 96/8
    assert raw.dtype("features") == np.float16
    latents = FeatureRepository(run / "resvae" / "latents")
    assert latents.ids == raw.ids and latents.shape("latents") == (8, 6, 6)
    assert res["resvae"]["compression_vs_fp32"] >= 32  # latent bytes <= 1/32 of the raw fp32 features
    assert res["resvae"]["val_cosine"] == pytest.approx(_decoded_cosine(run), abs=1e-3)  # the figure is what it says
    teacher, meta = load_teacher(run / "teacher" / "weights" / "best.safetensors")
    assert meta["fusion"]["levels"] == [0, 1] and isinstance(teacher, TeacherDetector)
    assert (run / "teacher" / "metrics.csv").is_file()


def test_feature_source_keeps_decoded_maps_within_its_budget(tiny_pipeline_run):
    """Cached maps are exactly the decoder's; past the budget the rest are decoded every call, still right."""
    from training.repository.latents import load_resvae
    from training.teacher.feature_source import FeatureSource

    run, _ = tiny_pipeline_run
    latents = FeatureRepository(run / "resvae" / "latents")
    ids = latents.ids[:6]
    with torch.no_grad():
        expected = load_resvae(run / "resvae" / "resvae.safetensors").decode(
            torch.from_numpy(latents.get("latents", ids)).float())
    one_map_mb = expected[0].numel() * 4 / 2**20
    source = FeatureSource(latents, run / "resvae" / "resvae.safetensors", cache_mb=2.5 * one_map_mb)
    first = source(ids[:3] + ids[:1])  # a repeated id is looked up once
    assert torch.allclose(first, expected[[0, 1, 2, 0]], atol=1e-5)
    assert sorted(source._cache) == sorted(ids[:2])  # two maps fit the budget, the third does not
    again = source(ids[::-1])
    assert torch.allclose(again, expected.flip(0), atol=1e-5)
    assert sorted(source._cache) == sorted(ids[:2]) and source._cache_bytes <= 2.5 * one_map_mb * 2**20
    uncached = FeatureSource(latents, run / "resvae" / "resvae.safetensors", cache_mb=0)
    assert torch.allclose(uncached(ids), expected, atol=1e-5) and not uncached._cache


def _decoded_cosine(run: Path) -> float:
    """Mean cosine similarity of decoded latents against the raw features on the validation ids, recomputed."""
    from training.repository.latents import load_resvae

    val = json.loads((run / "data" / "split.json").read_text())["val"]
    raw = torch.from_numpy(FeatureRepository(run / "features" / "raw").get("features", val)).float()
    model = load_resvae(run / "resvae" / "resvae.safetensors")
    with torch.no_grad():
        decoded = model.destandardize(model.decode(torch.from_numpy(
            FeatureRepository(run / "resvae" / "latents").get("latents", val))))
    return float(torch.nn.functional.cosine_similarity(decoded.flatten(1), raw.flatten(1), dim=1).mean())


def test_resvae_learns_structured_features_and_resumes(tmp_path: Path, monkeypatch):
    """On features with a low-rank structure, the trained ResVAE reconstructs far better than the channel means
    (the standardised cosine a model that learnt nothing gets is about 0); a run killed after its first epoch
    resumes and ends where an uninterrupted one does."""
    from training.config import ResVAEConfig
    from training.repository.latents import encode_repository, reconstruction_quality, train_resvae
    from training.repository.store import RepositoryWriter

    g = torch.Generator().manual_seed(0)
    basis = torch.randn(3, 24, 1, 1, generator=g)
    ids = [f"im{i}" for i in range(48)]
    maps = torch.nn.functional.interpolate(torch.randn(48, 3, 4, 4, generator=g), size=(8, 8), mode="bilinear")
    feats = (maps[:, :, None] * basis[None]).sum(1) + 0.05 * torch.randn(48, 24, 8, 8, generator=g)
    writer = RepositoryWriter(tmp_path / "raw", ids, {"features": ((24, 8, 8), "float16")}, "k", meta={"grid": 8})
    writer.write_chunk(0, {"features": feats.numpy().astype(np.float16)})
    raw = writer.finish()
    cfg = ResVAEConfig(latent_channels=6, hidden=32, blocks=1, epochs=12, batch_size=8, lr=0.003)
    model, _ = train_resvae(cfg, raw, ids[:40], tmp_path / "full", seed=0, config_hash="h")
    latents = encode_repository(model, raw, tmp_path / "latents", build_key="k")
    cos_raw, cos_std = reconstruction_quality(model, raw, latents, ids[40:])
    assert cos_std > 0.6, cos_std  # 0.79 measured; the channel means alone give about 0
    # resume: two epochs of a 12-epoch run, "killed", then the same call continues from its state.pt
    from training.engine.loop import TrainLoop

    original, calls = TrainLoop.run_epoch, []

    def killed_in_the_third_epoch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(TrainLoop, "run_epoch", killed_in_the_third_epoch)
        with pytest.raises(KeyboardInterrupt):
            train_resvae(cfg, raw, ids[:40], tmp_path / "killed", seed=0, config_hash="h")
    resumed, _ = train_resvae(cfg, raw, ids[:40], tmp_path / "killed", seed=0, config_hash="h")
    for a, b in zip(resumed.state_dict().values(), model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5)
    assert (tmp_path / "killed" / "loss.csv").read_text().count("\n") == cfg.epochs + 1


def test_feature_lookup_is_moved_like_the_image(tiny_dataset: Path):
    """A feature map that marks a box on the un-augmented canvas, warped with the item's matrix, lands on the
    augmented box (flips, zoom and shift)."""
    from training.data import load_dataset

    ds = load_dataset(tiny_dataset)
    aug = AugmentConfig(hflip=0.5, vflip=0.5, scale=(0.8, 1.2), translate=0.1, brightness=0, contrast=0)
    plain = DetectionDataset(ds.records, 96)
    moved = DetectionDataset(ds.records, 96, aug, seed=3, with_affine=True)
    checked = 0
    for index in range(8):
        base, item = plain[index], moved[index]
        if len(item["boxes"]) != len(base["boxes"]) or not len(base["boxes"]):
            continue
        marker = torch.zeros(1, 1, 96, 96)
        x1, y1, x2, y2 = base["boxes"][0].round().int().tolist()
        marker[..., y1:y2, x1:x2] = 1.0
        warped = warp_features(marker, item["tile_affine"][:1], 96)[0, 0]
        ys, xs = torch.nonzero(warped > 0.5, as_tuple=True)
        expect = item["boxes"][0]
        assert abs(float(xs.float().mean()) + 0.5 - float(expect[0] + expect[2]) / 2) < 1.5
        assert abs(float(ys.float().mean()) + 0.5 - float(expect[1] + expect[3]) / 2) < 1.5
        checked += 1
    assert checked >= 3
    identity = torch.tensor([[[1.0, 0, 0], [0, 1, 0]]])
    x = torch.randn(1, 4, 12, 12)
    assert torch.equal(warp_features(x, identity, 96), x)
    flip = torch.tensor([[[-1.0, 0, 96], [0, 1, 0]]])
    torch.testing.assert_close(warp_features(x, flip, 96), x.flip(-1))


def test_fusion_kernel_matches_reference_forward_and_backward():
    torch.manual_seed(0)
    level_channels = [16, 32, 64]
    fusion = Fusion(24, 12, level_channels, levels=[0, 1], heads=2)
    for att in fusion.attend.values():  # non-zero output projection so the attention path matters
        torch.nn.init.normal_(att.out.weight, std=0.2)
    feats = [torch.randn(2, c, 12 // 2 ** i, 12 // 2 ** i, requires_grad=True) for i, c in enumerate(level_channels)]
    ddpm = torch.randn(2, 24, 12, 12, requires_grad=True)
    outs = {}
    for impl in ("kernel", "reference"):
        fusion.set_impl(impl)
        fusion.zero_grad()
        for t in feats + [ddpm]:
            t.grad = None
        out = fusion(feats, ddpm)
        sum(o.pow(2).sum() for o in out).backward()
        outs[impl] = ([o.detach() for o in out], ddpm.grad.clone(), fusion.filter.mask.grad.clone(),
                      fusion.attend["0"].q.weight.grad.clone())
    k, r = outs["kernel"], outs["reference"]
    for a, b in zip(k[0], r[0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(k[1:], r[1:]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    assert torch.equal(k[0][2], feats[2].detach())  # level 2 is not fused


def test_fft_filter_is_a_gaussian_lowpass_and_checks_its_size():
    mask = gaussian_lowpass(12, 12, 0.25)
    assert mask.shape == (12, 7) and float(mask[0, 0]) == 1.0 and float(mask[6, 6]) < float(mask[1, 1])
    filt = FFTFilter(12, 0.1, learnable=False)
    x = torch.randn(1, 3, 12, 12)
    y = filt(x)
    torch.testing.assert_close(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)  # DC kept
    assert float(y.std()) < float(x.std())  # noise removed
    with pytest.raises(ValueError, match="built for 12x12"):
        filt(torch.randn(1, 3, 10, 10))
    with pytest.raises(ValueError, match="divisible by heads"):
        DynamicCrossAttention(30, heads=4)


def test_untrained_fusion_leaves_the_detector_unchanged():
    torch.manual_seed(0)
    teacher = TeacherDetector(DetectorSpec(num_classes=3), 24, 12,
                              {"levels": [0, 1, 2], "heads": 2, "fft_filter": True, "gate": True, "impl": "kernel"})
    teacher.eval()
    x = torch.randn(1, 3, 96, 96)
    out = teacher(x, torch.randn(1, 24, 12, 12))
    ref = teacher.detector(x)
    torch.testing.assert_close(out.cls_logits, ref.cls_logits)
    torch.testing.assert_close(out.box_dist, ref.box_dist)


def test_teacher_overfits_eight_training_images(tmp_path: Path):
    """Proof that features, fusion and detector are wired right: mAP50 >= 0.9 on the 8 images it trained on.

    The 8 images are picked so that every defect spans at least 12 canvas pixels a side (a stride-8 detector
    at 128 px cannot be expected to memorise a 3-pixel inclusion in 100 steps)."""
    from training.data import SynthConfig, load_dataset, write_synthetic_dataset
    from training.diffusion.ddpm import train_ddpm
    from training.diffusion.features import build_feature_repository
    from training.repository.latents import encode_repository, save_resvae, train_resvae
    from training.teacher.feature_source import FeatureSource

    root = write_synthetic_dataset(tmp_path / "data", SynthConfig(num_images=40, size=128, seed=1, contrast=(0.9, 1.0),
                                                                   max_defects=1, background_fraction=0.0))
    ds = load_dataset(root)
    big = [i for i, r in enumerate(ds.records) if len(r.boxes) and
           (np.minimum(r.boxes[:, 2] - r.boxes[:, 0], r.boxes[:, 3] - r.boxes[:, 1]) >= 12).all()]
    eight = ds.subset(big[:8])
    assert len(eight) == 8
    config = config_from_dict({
        "model": {"size": "n", "input_size": 128, "seg_head": "off"},
        "train": {"epochs": 100, "batch_size": 8, "lr": 0.004, "eval_every": 50, "ema": False,
                  "augment": {"hflip": 0, "vflip": 0, "scale": [1.0, 1.0], "translate": 0, "brightness": 0,
                              "contrast": 0}},
        "ddpm": {"image_size": 32, "base_width": 16, "epochs": 2, "batch_size": 8, "sample_steps": 5, "num_samples": 4},
        "features": {"timesteps": [50, 150], "blocks": ["up.1.1", "up.2.1"]},
        "resvae": {"latent_channels": 8, "hidden": 32, "blocks": 1, "epochs": 3, "batch_size": 8},
        "teacher": {"levels": [0, 1], "heads": 2}})
    ddpm = train_ddpm(config.ddpm, eight.records, 128, tmp_path / "ddpm")
    raw = build_feature_repository(ddpm.weights, eight.records, 128, config.features, tmp_path / "raw", build_key="t")
    vae, _ = train_resvae(config.resvae, raw, raw.ids, tmp_path)
    save_resvae(vae, tmp_path / "resvae.safetensors", {})
    latents = encode_repository(vae, raw, tmp_path / "latents", build_key="t")
    source = FeatureSource(latents, tmp_path / "resvae.safetensors")
    result = TeacherTrainer(config, eight, eight, tmp_path / "teacher", source, resume=False).fit()
    assert result.best_metrics["map50"] >= 0.9, result.best_metrics


def test_sampler_returns_images_in_range():
    unet = UNet(UNetSpec(in_channels=3, base_width=8, width_mults=(1, 2), attention_levels=()))
    out = sample(unet, NoiseSchedule(100), num=2, size=8, steps=5)
    assert out.shape == (2, 3, 8, 8) and float(out.abs().max()) <= 1.0
