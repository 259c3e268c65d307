"""``python -m training compare``: every model over several seeds, the shared stages trained once, a table whose
figures are the seeds' mean and std, and a rerun that trains nothing."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from training.cli import main

SHORT = ["train.epochs=2", "train.eval_every=1", "teacher.epochs=1", "ddpm.epochs=1", "resvae.epochs=1"]


@pytest.fixture(scope="module")
def compared(tiny_pipeline_config: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compare")
    assert main(["compare", "--config", str(tiny_pipeline_config), "--seeds", "0", "1", "--out", str(out),
                 "--set", *SHORT]) == 0
    return out


def test_compare_writes_mean_and_std_of_every_model(compared: Path):
    data = json.loads((compared / "compare.json").read_text())
    rows = data["summary"]["rows"]
    assert list(rows) == ["baseline", "teacher", "student", "self_distill", "continued_baseline"]
    text = (compared / "compare.md").read_text()
    for name, row in rows.items():
        values = [data["scores"][s][name]["map50_95"] for s in ("0", "1")]
        assert row["map50_95"][0] == pytest.approx(statistics.fmean(values))
        assert row["map50_95"][1] == pytest.approx(statistics.stdev(values))
        assert f"| {name} | " in text and f"{row['map50_95'][0]:.4f} ± {row['map50_95'][1]:.4f}" in text
    # the synthetic data knows each defect's contrast: the table breaks AP50 down by it
    assert set(rows["student"]["ap50_by_contrast"]) == {"faint", "medium", "strong"}
    assert "## AP50 by defect contrast" in text and "## AP50:95 per class" in text
    claims = {(c["model"], c["control"]) for c in data["summary"]["claims"]}
    assert claims == {("student", "self_distill"), ("student", "baseline"), ("teacher", "continued_baseline")}
    assert (compared / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["timing"]["baseline"][0]["seconds_per_epoch"] > 0
    assert data["timing"]["baseline"][0]["seconds_per_validation"] > 0


def test_compare_trains_the_shared_stages_once_and_the_detectors_per_seed(compared: Path):
    from safetensors.torch import load_file

    for seed in (0, 1):
        full = compared / f"seed-{seed}" / "full"
        for stage in ("data", "ddpm", "features", "resvae"):
            assert (full / stage).is_symlink() and (full / stage).resolve() == (compared / "shared" / stage).resolve()
        assert not (full / "baseline").is_symlink()
        # continued_baseline trains this seed's baseline on for the teacher's epochs; self_distill distils from
        # that one continued baseline (trained once, in whichever control ran first)
        for variant in ("self_distill", "continued_baseline"):
            assert (compared / f"seed-{seed}" / variant / "baseline").resolve() == (full / "baseline").resolve()
        continued = compared / f"seed-{seed}" / "self_distill" / "continued"
        assert not continued.is_symlink()
        assert (compared / f"seed-{seed}" / "continued_baseline" / "continued").resolve() == continued.resolve()
        assert json.loads((continued / "summary.json").read_text())["epochs"] == 1
    w0 = load_file(compared / "seed-0" / "full" / "baseline" / "weights" / "last.safetensors")
    w1 = load_file(compared / "seed-1" / "full" / "baseline" / "weights" / "last.safetensors")
    assert any(not (w0[k] == w1[k]).all() for k in w0)  # the seeds train different detectors


def test_compare_rerun_trains_and_evaluates_nothing(compared: Path, tiny_pipeline_config: Path, monkeypatch):
    import training.evaluation.compare as compare

    markers = sorted(compared.glob("seed-*/*/*/stage.json"))
    before = {p: p.stat().st_mtime_ns for p in markers}
    monkeypatch.setattr(compare, "checkpoint_predictions", lambda *a, **k: pytest.fail("evaluated again"))
    assert main(["compare", "--config", str(tiny_pipeline_config), "--seeds", "0", "1", "--out", str(compared),
                 "--set", *SHORT]) == 0
    assert {p: p.stat().st_mtime_ns for p in markers} == before


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0", "0"], "--seeds: give distinct seeds"),
    (["--variants", "full,bogus"], "--variants: unknown ['bogus']"),
])
def test_compare_names_bad_arguments(tiny_pipeline_config: Path, tmp_path: Path, capsys, args, message):
    assert main(["compare", "--config", str(tiny_pipeline_config), "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written
