"""Model bundle: round trip, safety, model card."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from histo_net.errors import ModelBundleError
from histo_net.features.qc import QCReference
from histo_net.models import GatedAttentionMIL, TileClassifier
from histo_net.models.bundle import (
    FORMAT_VERSION,
    ModelBundle,
    library_versions,
    load_bundle,
    save_bundle,
)
from histo_net.models.card import write_model_card
from histo_net.models.checkpoint import save_checkpoint


def _bundle() -> ModelBundle:
    torch.manual_seed(0)
    encoder = TileClassifier(backbone="resnet18", num_classes=3)
    mil = GatedAttentionMIL(in_dim=encoder.embed_dim, num_classes=2, hidden_dim=32, attn_dim=16)
    with torch.no_grad():  # non-default buffer values must survive too
        encoder.backbone.bn1.running_mean.uniform_(-1, 1)
    return ModelBundle(
        class_names=["net", "other_srct"],
        tile_class_names=["net", "other_srct", "non_tumour"],
        positive_class="net",
        target_mpp=0.5,
        tile_size_px=64,
        encoder_name="resnet18",
        encoder_kwargs=encoder.init_kwargs,
        encoder_state=encoder.state_dict(),
        mil_kwargs=mil.init_kwargs,
        mil_state=mil.state_dict(),
        temperature=1.7,
        threshold=0.42,
        indeterminate_band=(0.3, 0.6),
        training_config={"data_summary": {"slides": 10}},
        metrics={"test": {"auroc": 0.97, "auroc_ci": [0.9, 1.0]}},
        qc_reference=QCReference((0.1,) * 5, (0.01,) * 5, 1.5, 1.0),
        versions=library_versions(),
    )


def test_round_trip_rebuilds_identical_outputs(tmp_path: Path) -> None:
    bundle = _bundle()
    path = tmp_path / "model.pt"
    save_bundle(path, bundle)
    raw = torch.load(path, weights_only=True)  # a plain weights-only file
    assert raw["format_version"] == FORMAT_VERSION
    loaded = load_bundle(path)
    assert loaded.indeterminate_band == (0.3, 0.6) and loaded.class_names == bundle.class_names
    assert loaded.encoder_hash() == bundle.encoder_hash()
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    enc_a, enc_b = bundle.build_encoder(), loaded.build_encoder()
    assert not enc_b.training
    with torch.no_grad():
        feats = enc_a.forward_features(x)
        torch.testing.assert_close(enc_b.forward_features(x), feats, rtol=0, atol=0)
        bags, mask = feats.unsqueeze(0), torch.ones(1, 2, dtype=torch.bool)
        torch.testing.assert_close(
            loaded.build_mil()(bags, mask), bundle.build_mil()(bags, mask), rtol=0, atol=0
        )


def test_encoder_hash_changes_with_weights() -> None:
    bundle = _bundle()
    before = bundle.encoder_hash()
    state = dict(bundle.encoder_state)
    state["head.1.bias"] = state["head.1.bias"] + 1e-3
    bundle.encoder_state = state
    assert bundle.encoder_hash() != before


class Sneaky:
    """An arbitrary class: pickling it must make the bundle unloadable."""


def test_load_refusals(tmp_path: Path) -> None:
    payload = _bundle().to_dict()
    with pytest.raises(ModelBundleError, match="file not found"):
        load_bundle(tmp_path / "none.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ModelBundleError, match="not a torch file"):
        load_bundle(tmp_path / "text.pt")
    torch.save({**payload, "training_config": Sneaky()}, tmp_path / "pickled.pt")
    with pytest.raises(ModelBundleError, match="refusing to load pickled objects"):
        load_bundle(tmp_path / "pickled.pt")
    save_checkpoint(tmp_path / "future.pt", {**payload, "format_version": 99})
    with pytest.raises(ModelBundleError, match="format_version 99"):
        load_bundle(tmp_path / "future.pt")
    del payload["temperature"], payload["mil_state"]
    save_checkpoint(tmp_path / "partial.pt", payload)
    with pytest.raises(ModelBundleError, match="missing keys: mil_state, temperature"):
        load_bundle(tmp_path / "partial.pt")


def test_model_card(tmp_path: Path) -> None:
    write_model_card(tmp_path / "model_card.md", _bundle())
    text = (tmp_path / "model_card.md").read_text()
    for needle in (
        "Research use only",
        "net",
        "64 px at 0.5 um/px",
        "test.auroc",
        "0.97",
        "1.7",
        "Limitations",
    ):
        assert needle in text, needle


def test_save_refuses_non_plain_values(tmp_path: Path) -> None:
    bundle = _bundle()
    bundle.training_config = {"out_dir": tmp_path}  # a Path would need unpickling
    with pytest.raises(
        ModelBundleError, match=r"training_config\.out_dir: PosixPath is not plain data"
    ):
        save_bundle(tmp_path / "model.pt", bundle)
    assert not (tmp_path / "model.pt").exists()


def test_normalisation_has_one_source_and_old_files_load(tmp_path: Path) -> None:
    bundle = _bundle()
    with torch.no_grad():
        state = dict(bundle.encoder_state)
        state["mean"] = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    bundle.encoder_state = state
    assert bundle.normalization["mean"] == [10.0, 20.0, 30.0]
    encoder = bundle.build_encoder()
    assert encoder.mean.flatten().tolist() == [10.0, 20.0, 30.0]  # buffers, not kwargs, decide
    payload = bundle.to_dict()
    assert "normalization" not in payload and "mean" not in payload["encoder_kwargs"]
    # a file from before: a stored "normalization" and mean/std among the encoder kwargs
    legacy = {**payload, "normalization": {"mean": [1.0, 2.0, 3.0], "std": [1.0, 1.0, 1.0]},
              "encoder_kwargs": {**payload["encoder_kwargs"], "mean": [1.0, 2.0, 3.0]}}
    save_checkpoint(tmp_path / "legacy.pt", legacy)
    loaded = load_bundle(tmp_path / "legacy.pt")
    assert loaded.normalization["mean"] == [10.0, 20.0, 30.0]
    assert loaded.encoder_hash() == bundle.encoder_hash()
