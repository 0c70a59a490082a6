"""The tile-embedding loop and the features h5 layout (DESIGN.md section 3)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from histo_net.errors import HistoNetError
from histo_net.features.embed import SlideEmbedding, embed_slide
from histo_net.features.store import read_features_h5, write_features_h5
from histo_net.wsi.slide import open_slide


@pytest.fixture()
def png_slide(tmp_path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(tmp_path / "s.png")
    return tmp_path / "s.png"


def test_embed_slide_one_pass_matches_model(png_slide: Path) -> None:
    from histo_net.models import TileClassifier

    torch.manual_seed(0)
    model = TileClassifier(backbone="resnet18", num_classes=3).eval()
    with open_slide(png_slide, mpp_override=0.5) as slide:
        plan = slide.read_plan(0.5, 32)
        coords = np.array([[0, 0], [32, 0], [64, 32], [0, 32], [32, 32]], dtype=np.int64)
        tiles = torch.stack([torch.from_numpy(slide.read_tile(tuple(c), plan).copy()).permute(2, 0, 1)
                             for c in coords])
    emb = embed_slide(model, png_slide, coords, plan, device=torch.device("cpu"), batch_size=2,
                      workers=0, mpp_override=0.5, amp=False)
    assert emb.features.shape == (5, 512) and emb.features.dtype == np.float32
    assert emb.tile_probs.shape == (5, 3) and np.allclose(emb.tile_probs.sum(1), 1, atol=1e-5)
    assert emb.qc.shape[0] == 5 and np.isfinite(emb.qc).all()
    with torch.no_grad():
        ref = model.forward_features(tiles).numpy()
    assert np.allclose(emb.features, ref, atol=1e-4)
    emb_w = embed_slide(model, png_slide, coords, plan, device=torch.device("cpu"), batch_size=4,
                        workers=1, mpp_override=0.5, amp=False)
    assert np.allclose(emb_w.features, emb.features, atol=1e-5)


def test_features_h5_layout_roundtrip(tmp_path: Path) -> None:
    emb = SlideEmbedding(np.random.rand(4, 8).astype(np.float32),
                         np.full((4, 3), 1 / 3, np.float32), np.random.rand(4, 7).astype(np.float32))
    coords = np.arange(8, dtype=np.int64).reshape(4, 2)
    path = tmp_path / "features" / "s.h5"
    write_features_h5(path, emb, coords, {"encoder_name": "resnet18", "encoder_hash": "abc",
                                          "tile_class_names": ["a", "b", "c"]})
    with h5py.File(path) as h5:
        assert set(h5.keys()) == {"features", "coords", "tile_probs", "qc"}
        assert h5["features"].shape == (4, 8) and h5["coords"].dtype == np.int64
        assert h5.attrs["encoder_hash"] == "abc"
    back, c2, attrs = read_features_h5(path)
    assert np.array_equal(back.features, emb.features) and np.array_equal(c2, coords)
    assert attrs["encoder_name"] == "resnet18"
    assert list(path.parent.iterdir()) == [path]  # atomic: no temp files left
    with pytest.raises(ValueError):
        write_features_h5(tmp_path / "bad.h5", emb, coords[:2])
    (tmp_path / "junk.h5").write_bytes(b"nope")
    with pytest.raises(HistoNetError, match="junk.h5"):
        read_features_h5(tmp_path / "junk.h5")
