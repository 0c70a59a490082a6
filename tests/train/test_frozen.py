"""Frozen-feature mode: config rules, CLI refusals (exit 2, one line), the tile head, the
class-specific attention row, and (slow) train -> bundle -> predict --encoder-weights."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from histo_net.cli.main import main
from histo_net.config import build_config
from histo_net.errors import ConfigError
from histo_net.train.config import TrainConfig

PRESET = ["--set", "encoder.preset=vit-small-test"]
FAST = ["--set", "mil.epochs=6", "--set", "evaluation.bootstrap_samples=50",
        "--set", "encoder.head_epochs=50", "--workers", "0", "--no-progress"]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def _slide(manifest: Path, index: int = 0) -> Path:
    with open(manifest) as fh:
        row = list(csv.DictReader(fh))[index]
    return (manifest.parent / row["path"]).resolve()


def test_preset_fixes_the_tile_spec() -> None:
    cfg = build_config(TrainConfig, {}, ["encoder.preset=vit-small-test"])
    assert (cfg.tiling.tile_size_px, cfg.tiling.target_mpp) == (64, 1.0) and cfg.frozen_encoder
    same = build_config(TrainConfig, {"tiling": {"tile_size_px": 64, "stride_px": 32}},
                        ["encoder.preset=vit-small-test"])
    assert same.tiling.stride_px == 32 and same.tiling.target_mpp == 1.0
    assert not build_config(TrainConfig, {}).frozen_encoder  # default: our own tile CNN
    with pytest.raises(ConfigError, match="needs 64 px tiles at 1 um/px, got 128 px"):
        build_config(TrainConfig, {}, ["encoder.preset=vit-small-test", "tiling.tile_size_px=128"])
    with pytest.raises(ConfigError, match="unknown"):
        build_config(TrainConfig, {}, ["encoder.preset=nope"])
    with pytest.raises(ConfigError, match="encoder.weights needs encoder.preset"):
        build_config(TrainConfig, {}, ["encoder.weights=/x.safetensors"])


def test_cli_refuses_tile_spec_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "RUN"),
                 *PRESET, "--set", "tiling.target_mpp=0.5"])
    assert code == 2 and "encoder preset 'vit-small-test' needs 64 px tiles" in _one_line_error(capsys)


def test_cli_refuses_missing_weights(tiny_cohort: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "RUN"
    code = main(["train", "--manifest", str(tiny_cohort), "--out", str(run), *PRESET,
                 "--set", f"encoder.weights={tmp_path / 'absent.safetensors'}", *FAST])
    assert code == 2 and "absent.safetensors: weights file not found" in _one_line_error(capsys)
    assert not (run / "tiles").exists()  # refused before any slide was tiled
    code = main(["train", "--manifest", str(tiny_cohort), "--out", str(run), *PRESET, *FAST])
    assert code == 2 and "needs encoder.weights=" in _one_line_error(capsys)


def test_predict_refuses_a_different_weights_file(tiny_cohort: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from histo_net.models.bundle import save_bundle
    from tests.models.test_bundle_frozen import _bundle, _save_vit

    good, other = _save_vit(tmp_path / "vit.safetensors", 0), _save_vit(tmp_path / "b.safetensors", 1)
    save_bundle(tmp_path / "model.pt", _bundle(good))
    args = ["predict", str(_slide(tiny_cohort)), "--model", str(tmp_path / "model.pt"),
            "--out", str(tmp_path / "PRED"), "--no-progress"]
    assert main([*args, "--encoder-weights", str(other)]) == 2
    assert "differs from the expected" in _one_line_error(capsys)
    good.unlink()  # neither --encoder-weights nor the training-time path
    assert main(args) == 2 and "pass --encoder-weights PATH" in _one_line_error(capsys)


def test_linear_head_learns_separable_tiles() -> None:
    from histo_net.train.tile_head import fit_linear_head

    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=gen)
    x = torch.randn(300, 16, generator=gen) + 3.0 * torch.nn.functional.one_hot(y, 16).float()
    head, loss = fit_linear_head(x, torch.nn.functional.one_hot(y, 3).float(), epochs=100, lr=0.05,
                                 weight_decay=0.0, seed=0)
    acc = float((head(x).argmax(1) == y).float().mean())
    assert acc > 0.95 and loss < 0.3


def test_class_specific_attention_row_follows_the_call() -> None:
    from histo_net.models.bundle import ModelBundle
    from histo_net.predict.model import decide_slide

    bundle = ModelBundle(class_names=["a", "b"], tile_class_names=["a", "b"], positive_class="a",
                         target_mpp=0.5, tile_size_px=64, encoder_name="x", encoder_kwargs={},
                         encoder_state={}, mil_kwargs={}, mil_state={}, temperature=1.0,
                         threshold=0.5, indeterminate_band=(0.5, 0.5))
    attention = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)  # (C,N)
    for logits, row in (([3.0, -3.0], 0), ([-3.0, 3.0], 1)):
        decision = decide_slide(bundle, np.array(logits, np.float32), attention)
        assert decision.attention.shape == (3,)
        np.testing.assert_array_equal(decision.attention, attention[row])
    flat = decide_slide(bundle, np.array([1.0, 0.0], np.float32), attention[0])
    np.testing.assert_array_equal(flat.attention, attention[0])  # (N,) unchanged


@pytest.mark.slow
def test_frozen_train_predict_end_to_end(tiny_cohort: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from histo_net.models.bundle import load_bundle
    from tests.models.test_bundle_frozen import _save_vit

    weights = _save_vit(tmp_path / "vit.safetensors", 0)
    run = tmp_path / "RUN"
    assert main(["train", "--manifest", str(tiny_cohort), "--out", str(run), *PRESET,
                 "--set", f"encoder.weights={weights}", "--set", "mil.class_specific=true", *FAST]) == 0
    assert not (run / "checkpoints" / "tile_cnn.pt").exists()  # stage 1 skipped
    bundle = load_bundle(run / "model.pt")
    assert bundle.is_pretrained and set(bundle.encoder_state) == {"head.weight", "head.bias"}
    assert bundle.pretrained_encoder["weights_path"] == str(weights.resolve())
    assert bundle.pretrained_encoder["tile_head"]["source"] == "annotations"
    assert bundle.tile_class_names[0] == "non_tumour" and bundle.mil_kwargs["class_specific"]
    assert (run / "model.pt").stat().st_size * 20 < weights.stat().st_size
    assert "test only (random weights)" in (run / "model_card.md").read_text()
    moved = tmp_path / "elsewhere.safetensors"
    weights.rename(moved)  # predict must take --encoder-weights
    pred = tmp_path / "PRED"
    capsys.readouterr()
    assert main(["predict", str(_slide(tiny_cohort, 1)), "--model", str(run / "model.pt"),
                 "--out", str(pred), "--encoder-weights", str(moved), "--workers", "0",
                 "--no-progress"]) == 0
    slide_dir = next(p for p in pred.iterdir() if p.is_dir())
    report = json.loads((slide_dir / "report.json").read_text())
    assert report["tile_class_names"] == bundle.tile_class_names and report["tile_count"] > 0
    for name in ("report.html", "attention.png", "prob_neuroendocrine.png", "tiles.geojson"):
        assert (slide_dir / name).is_file(), name
    # rerun training: every stage is cached (no re-embedding), even with the file moved back
    moved.rename(weights)
    before = {p.name: p.stat().st_mtime_ns for p in (run / "features").glob("*.h5")}
    assert main(["train", "--manifest", str(tiny_cohort), "--out", str(run), *PRESET,
                 "--set", f"encoder.weights={weights}", "--set", "mil.class_specific=true", *FAST]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (run / "features").glob("*.h5")} == before


@pytest.mark.slow
def test_frozen_without_annotations_uses_mil_instances(tiny_cohort: Path, tmp_path: Path) -> None:
    from histo_net.models.bundle import load_bundle
    from tests.models.test_bundle_frozen import _save_vit

    with open(tiny_cohort) as fh:
        rows = list(csv.DictReader(fh))
    manifest = tmp_path / "plain.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["slide_id", "patient_id", "path", "label", "mpp"])
        writer.writeheader()
        for r in rows:
            writer.writerow({"slide_id": r["slide_id"], "patient_id": r["patient_id"],
                             "path": str((tiny_cohort.parent / r["path"]).resolve()),
                             "label": r["label"], "mpp": r["level0_mpp"]})
    weights = _save_vit(tmp_path / "vit.safetensors", 0)
    run = tmp_path / "RUN"
    assert main(["train", "--manifest", str(manifest), "--out", str(run), *PRESET,
                 "--set", f"encoder.weights={weights}", *FAST]) == 0
    bundle = load_bundle(run / "model.pt")
    assert bundle.pretrained_encoder["tile_head"]["source"] == "mil_instances"
    assert bundle.tile_class_names == bundle.class_names
    assert tuple(bundle.encoder_state["head.weight"].shape) == (2, 384)
