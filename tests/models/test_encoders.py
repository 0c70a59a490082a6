"""PretrainedEncoder: upstream equivalence per preset, preprocessing, head, no network.

The default suite runs the small test preset end to end; every published preset
is checked the same way in the slow set (``-m slow``; the giant ViTs need ~9 GB
of RAM and about a minute each on 2 cores: run them one at a time).
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from histo_net.errors import ConfigError, ModelBundleError
from histo_net.models.encoders import PretrainedEncoder, build_trunk
from histo_net.models.presets import get_preset, list_presets
from histo_net.models.registry import create_encoder
from tests.models.encoder_upstream import (
    check_matches_upstream,
    random_tiles,
)

GIANT = ("uni", "uni2-h", "virchow2", "h-optimus-0", "h-optimus-1", "prov-gigapath")


@pytest.fixture(scope="module")
def small_check(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The test preset checked against upstream once; its files (.safetensors, .bin) kept."""
    return check_matches_upstream("vit-small-test", tmp_path_factory.mktemp("vit_small"),
                                  keep_files=True)


@pytest.fixture(scope="module")
def small_files(small_check: dict[str, object]) -> dict[str, Path]:
    """The test preset's upstream model (seed 0) saved as .safetensors and .bin."""
    return small_check["paths"]  # type: ignore[return-value]


def test_small_preset_matches_upstream(small_check: dict[str, object]) -> None:
    """Both published formats load and reproduce timm + torchvision-transform embeddings."""
    assert small_check["dim"] == 384
    assert set(small_check) >= {"safetensors", "bin"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50-imagenet", "resnet50-trunc-imagenet", *GIANT])
def test_published_preset_matches_upstream(name: str, tmp_path: Path) -> None:
    summary = check_matches_upstream(name, tmp_path)
    assert summary["dim"] == get_preset(name).embed_dim


@pytest.mark.slow
@pytest.mark.parametrize("name", list_presets())
def test_every_preset_builds_to_its_dim_on_meta(name: str) -> None:
    """Cheap architecture check: the recipe builds (no memory) and pools to embed_dim."""
    preset = get_preset(name)
    trunk = build_trunk(preset, "meta")
    if preset.library == "timm":
        width = int(trunk.num_features)
        assert preset.embed_dim == (2 * width if preset.pooling == "cls_mean_patch" else width)


def test_loaded_trunk_keeps_the_published_keys(small_files: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    enc = create_encoder("vit-small-test", weights_path=small_files["safetensors"])
    assert set(enc.trunk.state_dict()) == set(load_file(str(small_files["safetensors"])))
    assert not any(p.requires_grad for p in enc.trunk.parameters())
    assert not any(t.is_meta for t in enc.state_dict().values())
    assert set(enc.state_dict()) == {f"trunk.{k}" for k in enc.trunk.state_dict()}  # no buffers


def test_head_empty_or_linear_and_trunk_stays_eval(small_files: dict[str, Path]) -> None:
    x = torch.from_numpy(random_tiles(3, 64)).permute(0, 3, 1, 2)
    bare = PretrainedEncoder("vit-small-test", weights_path=small_files["bin"])
    with torch.inference_mode():
        feats = bare.forward_features(x)
        assert feats.dtype == torch.float32 and feats.shape == (3, 384)
        assert bare.forward_head(feats).shape == (3, 0) and bare(x).shape == (3, 0)
    assert bare.head_state_dict() == {} and bare.init_kwargs == {"preset": "vit-small-test",
                                                                  "num_classes": 0}
    headed = PretrainedEncoder("vit-small-test", weights_path=small_files["bin"], num_classes=3)
    headed.train()
    assert headed.head is not None and headed.head.training and not headed.trunk.training
    with torch.no_grad():
        torch.testing.assert_close(headed.forward_features(x), feats)  # trunk in eval
        assert headed(x).shape == (3, 3)
    assert sorted(headed.head_state_dict()) == ["bias", "weight"]
    float_in = headed.eval().forward_features(x.float())
    torch.testing.assert_close(float_in, feats)  # float 0-255 == uint8


def test_feature_key_tracks_weights_not_head(small_files: dict[str, Path], tmp_path: Path) -> None:
    a = PretrainedEncoder("vit-small-test", weights_path=small_files["safetensors"])
    b = PretrainedEncoder("vit-small-test", weights_path=small_files["bin"], num_classes=2)
    state = torch.load(small_files["bin"], weights_only=True)
    state["norm.bias"] = state["norm.bias"] + 1e-3  # one value changed
    torch.save(state, tmp_path / "other.bin")
    c = PretrainedEncoder("vit-small-test", weights_path=tmp_path / "other.bin")
    assert a.weights_sha256 != b.weights_sha256  # different file formats, different bytes
    assert a.feature_key() != c.feature_key() and len(a.feature_key()) == 64
    again = create_encoder("vit-small-test", weights_path=small_files["safetensors"],
                           expected_sha256=a.weights_sha256)
    assert a.feature_key() == again.feature_key()
    with pytest.raises(ModelBundleError, match="other.bin: sha256 .* differs"):
        create_encoder("vit-small-test", weights_path=tmp_path / "other.bin",
                       expected_sha256=a.weights_sha256)


def test_wrong_tile_size_and_missing_weights_are_typed(small_files: dict[str, Path]) -> None:
    enc = PretrainedEncoder("vit-small-test", weights_path=small_files["bin"])
    with pytest.raises(ConfigError, match=r"expects \(B,3,64,64\) tiles \(64 px at 1 um/px\)"):
        enc.forward_features(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))
    with pytest.raises(ConfigError) as info:
        PretrainedEncoder("uni")  # before anything is built or read
    assert "needs a local weights file" in str(info.value) and "MahmoodLab/UNI" in str(info.value)
    assert "\n" not in str(info.value)


def test_key_mismatch_and_wrong_resolution_file(small_files: dict[str, Path],
                                                tmp_path: Path) -> None:
    state = torch.load(small_files["bin"], weights_only=True)
    broken = dict(state)
    del broken["blocks.0.norm1.weight"]
    broken["head.weight"] = torch.zeros(1000, 384)
    torch.save(broken, tmp_path / "broken.bin")
    with pytest.raises(ModelBundleError) as info:
        PretrainedEncoder("vit-small-test", weights_path=tmp_path / "broken.bin")
    msg = str(info.value)
    assert "\n" not in msg and "broken.bin: weights do not fit encoder preset 'vit-small-test'" in msg
    assert "1 missing (blocks.0.norm1.weight)" in msg and "1 unexpected (head.weight)" in msg
    wrong_res = dict(state, pos_embed=torch.zeros(1, 197, 384))  # a 224 px checkpoint
    torch.save(wrong_res, tmp_path / "at224.bin")
    with pytest.raises(ModelBundleError, match=r"pos_embed: file \(1, 197, 384\) vs model "
                                               r"\(1, 17, 384\)"):
        PretrainedEncoder("vit-small-test", weights_path=tmp_path / "at224.bin")


def test_resize_and_crop_follow_torchvision(small_files: dict[str, Path]) -> None:
    """A preset whose tiles need resizing: same as torchvision's tensor Resize+CenterCrop."""
    from torchvision import transforms as T

    preset = dataclasses.replace(get_preset("vit-small-test"), name="resize-test",
                                 tile_size_px=80, resize_px=73, crop_px=64)
    enc = PretrainedEncoder(preset, weights_path=small_files["bin"])
    x = torch.from_numpy(random_tiles(2, 80)).permute(0, 3, 1, 2)
    tf = T.Compose([T.Resize(73, antialias=True), T.CenterCrop(64),
                    T.Normalize(mean=preset.mean, std=preset.std)])
    ref = tf(x.float().div(255.0))  # resize in 0-1 instead of 0-255: linear, same result
    got = enc.preprocess(x)
    assert got.shape == (2, 3, 64, 64)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_no_network_during_build_and_load(small_files: dict[str, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    enc = PretrainedEncoder("vit-small-test", weights_path=small_files["safetensors"])
    rand = PretrainedEncoder("vit-small-test", random_init=True)  # the random-init path too
    assert rand.weights_sha256 is None and len(rand.feature_key()) == 64
    with torch.inference_mode():
        assert enc.forward_features(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape == (1, 384)


def test_no_hub_calls_in_the_package() -> None:
    """Policy: no code path may ask timm/HF for pretrained weights."""
    root = Path(__file__).resolve().parents[2] / "histo_net"
    banned = ("pretrained=True", "hf_hub", "hf-hub:", "huggingface_hub", "load_state_dict_from_url")
    for path in root.rglob("*.py"):
        text = path.read_text()
        for word in banned:
            assert word not in text, f"{path}: contains {word!r}"


def test_embed_slide_uses_the_encoder_unchanged(small_files: dict[str, Path],
                                                tmp_path: Path) -> None:
    """The one features loop: embeddings == forward_features, tile_probs (N,0), QC, h5 roundtrip."""
    from PIL import Image

    from histo_net.features.embed import embed_slide
    from histo_net.features.store import read_features_h5, write_features_h5
    from histo_net.wsi.slide import open_slide

    Image.fromarray(random_tiles(1, 128, seed=3)[0]).save(tmp_path / "s.png")
    enc = PretrainedEncoder("vit-small-test", weights_path=small_files["safetensors"])
    coords = np.array([[0, 0], [64, 0], [0, 64], [64, 64]], dtype=np.int64)
    with open_slide(tmp_path / "s.png", mpp_override=1.0) as slide:
        plan = slide.read_plan(1.0, 64)
        tiles = torch.stack([torch.from_numpy(slide.read_tile(tuple(c), plan).copy()).permute(2, 0, 1)
                             for c in coords])
    emb = embed_slide(enc, tmp_path / "s.png", coords, plan, device=torch.device("cpu"),
                      batch_size=3, workers=0, mpp_override=1.0, amp=True)
    assert emb.features.shape == (4, 384) and emb.tile_probs.shape == (4, 0)
    assert emb.qc.shape[0] == 4 and np.isfinite(emb.qc).all()
    with torch.inference_mode():
        ref = enc.forward_features(tiles).numpy()
    assert np.allclose(emb.features, ref, atol=1e-4)
    write_features_h5(tmp_path / "f.h5", emb, coords,
                      {"encoder_name": "vit-small-test", "encoder_hash": enc.feature_key()})
    back, _, attrs = read_features_h5(tmp_path / "f.h5")
    assert back.tile_probs.shape == (4, 0) and attrs["encoder_hash"] == enc.feature_key()
