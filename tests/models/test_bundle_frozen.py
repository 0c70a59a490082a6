"""Bundles of a frozen pretrained encoder: the weights are referenced by sha256, never embedded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from histo_net.errors import ModelBundleError
from histo_net.models import GatedAttentionMIL
from histo_net.models.bundle import FORMAT_VERSION, ModelBundle, load_bundle, save_bundle
from histo_net.models.card import write_model_card
from histo_net.models.checkpoint import save_checkpoint
from histo_net.models.encoders import PretrainedEncoder
from histo_net.models.presets import EncoderPreset, get_preset
from histo_net.models.weights import file_sha256

TILE_CLASSES = ["non_tumour", "net", "other_srct"]


def _save_vit(path: Path, seed: int) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    enc = PretrainedEncoder("vit-small-test", random_init=True)
    save_file({k: v.contiguous() for k, v in enc.trunk.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("frozen_weights")
    return {"good": _save_vit(root / "vit.safetensors", 0), "other": _save_vit(root / "other.safetensors", 1)}


def _bundle(weights_path: Path) -> ModelBundle:
    preset = get_preset("vit-small-test")
    torch.manual_seed(0)
    head = torch.nn.Linear(preset.embed_dim, len(TILE_CLASSES))
    mil = GatedAttentionMIL(in_dim=preset.embed_dim, num_classes=2, hidden_dim=16, attn_dim=8,
                            class_specific=True)
    record = {"preset": preset.name, "preset_config": preset.to_dict(),
              "weights_sha256": file_sha256(weights_path), "weights_path": str(weights_path),
              "weights_size_bytes": weights_path.stat().st_size, "licence": preset.licence}
    return ModelBundle(
        class_names=["net", "other_srct"], tile_class_names=TILE_CLASSES, positive_class="net",
        target_mpp=preset.target_mpp, tile_size_px=preset.tile_size_px, encoder_name=preset.name,
        encoder_kwargs={"preset": preset.name, "num_classes": 3},
        encoder_state={f"head.{k}": v for k, v in head.state_dict().items()},
        mil_kwargs=mil.init_kwargs, mil_state=mil.state_dict(), temperature=1.0, threshold=0.5,
        indeterminate_band=(0.4, 0.6), pretrained_encoder=record)


def test_preset_round_trips_through_its_dict() -> None:
    for name in ("vit-small-test", "virchow2", "resnet50-imagenet"):
        preset = get_preset(name)
        assert EncoderPreset.from_dict(preset.to_dict()) == preset


def test_bundle_references_weights_and_rebuilds_the_same_encoder(weights: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    bundle = _bundle(weights["good"])
    path = tmp_path / "model.pt"
    save_bundle(path, bundle)
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == FORMAT_VERSION == 4
    assert set(raw["encoder_state"]) == {"head.weight", "head.bias"}  # the head only
    assert path.stat().st_size * 20 < weights["good"].stat().st_size
    loaded = load_bundle(path)
    assert loaded.is_pretrained and loaded.encoder_preset == get_preset("vit-small-test")
    assert loaded.encoder_hash() == bundle.encoder_hash()
    enc = loaded.build_encoder(encoder_weights=weights["good"])  # explicit path
    ref = PretrainedEncoder("vit-small-test", weights_path=weights["good"], num_classes=3)
    assert ref.head is not None
    ref.head.load_state_dict({k.removeprefix("head."): v for k, v in bundle.encoder_state.items()})
    x = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), ref.eval()(x), rtol=0, atol=0)
    assert isinstance(loaded.build_encoder(), PretrainedEncoder)  # the training-time path
    # the card names the encoder's licence and says the weights are not inside
    write_model_card(tmp_path / "card.md", loaded)
    card = (tmp_path / "card.md").read_text()
    assert get_preset("vit-small-test").licence in card and "NOT in this bundle" in card


def test_wrong_or_missing_weights_are_one_line_errors(weights: dict[str, Path], tmp_path: Path) -> None:
    moved = tmp_path / "vit.safetensors"
    moved.write_bytes(weights["good"].read_bytes())
    bundle = _bundle(moved)
    save_bundle(tmp_path / "model.pt", bundle)
    loaded = load_bundle(tmp_path / "model.pt")
    with pytest.raises(ModelBundleError, match="differs from the expected") as err:
        loaded.build_encoder(encoder_weights=weights["other"])
    assert "\n" not in str(err.value)
    moved.unlink()
    with pytest.raises(ModelBundleError, match="--encoder-weights") as err:
        loaded.build_encoder()
    assert "\n" not in str(err.value)
    with pytest.raises(ModelBundleError, match="not found"):
        loaded.build_encoder(encoder_weights=tmp_path / "absent.safetensors")


def test_malformed_pretrained_records_are_refused(weights: dict[str, Path], tmp_path: Path) -> None:
    payload = _bundle(weights["good"]).to_dict()
    bad_sha = {**payload, "pretrained_encoder": {**payload["pretrained_encoder"], "weights_sha256": "x"}}
    save_checkpoint(tmp_path / "sha.pt", bad_sha)
    with pytest.raises(ModelBundleError, match="not a sha256"):
        load_bundle(tmp_path / "sha.pt")
    wrong_head = {**payload, "encoder_state": {"head.weight": torch.zeros(3, 10), "head.bias": torch.zeros(3)}}
    save_checkpoint(tmp_path / "head.pt", wrong_head)
    with pytest.raises(ModelBundleError, match="does not fit 3 tile classes x 384-dim"):
        load_bundle(tmp_path / "head.pt")


def test_format_1_bundles_still_load(tmp_path: Path) -> None:
    from tests.models.test_bundle import _bundle as cnn_bundle

    payload = cnn_bundle().to_dict()
    payload["format_version"] = 1
    del payload["pretrained_encoder"]  # written before the field existed
    save_checkpoint(tmp_path / "v1.pt", payload)
    loaded = load_bundle(tmp_path / "v1.pt")
    assert not loaded.is_pretrained and loaded.encoder_preset is None
    assert loaded.normalization["mean"] and loaded.build_encoder() is not None
