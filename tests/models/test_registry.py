"""Backbone registry and the tile classifier."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from histo_net.errors import ConfigError, ModelBundleError
from histo_net.models import TileClassifier, create_model, list_models, register_model
from histo_net.models.registry import unregister_model


def test_builtin_backbones_listed() -> None:
    assert {"resnet18", "resnet50", "efficientnet_b0", "convnext_tiny"} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_tile_classifier_shapes(name: str) -> None:
    torch.manual_seed(0)
    model = TileClassifier(backbone=name, num_classes=3).eval()
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        full = model(x.float())  # float 0-255 input gives the same result as uint8
    assert feats.shape == (2, model.embed_dim) and feats.dtype == torch.float32
    assert model.embed_dim == create_model(name).embed_dim
    assert logits.shape == (2, 3)
    torch.testing.assert_close(full, logits)


def test_registry_duplicates_and_unknown() -> None:
    @register_model("tiny_test_backbone")
    def tiny() -> nn.Module:
        module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        module.embed_dim = 4
        return module

    try:
        assert "tiny_test_backbone" in list_models()
        with pytest.raises(ValueError, match="already registered"):
            register_model("tiny_test_backbone")(tiny)
        with pytest.raises(ValueError, match="already registered"):
            register_model("resnet18")(tiny)
        model = TileClassifier(backbone="tiny_test_backbone", num_classes=2)
        assert model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8)).shape == (1, 2)
    finally:
        unregister_model("tiny_test_backbone")
    with pytest.raises(ConfigError, match="resnet18") as info:
        create_model("resnet9000")
    assert "unknown model" in str(info.value) and "convnext_tiny" in str(info.value)


def test_normalisation_inside_model() -> None:
    model = TileClassifier(backbone="resnet18", num_classes=2, mean=[10, 20, 30], std=[2, 2, 2])
    x = torch.full((1, 3, 4, 4), 30, dtype=torch.uint8)
    out = model.normalize(x)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([10.0, 5.0, 0.0]))


def test_weights_path_backbone_and_full(tmp_path: Path) -> None:
    src = TileClassifier(backbone="resnet18", num_classes=2)
    torch.save(
        src.backbone.state_dict() | {"fc.weight": torch.zeros(1000, 512)}, tmp_path / "bb.pt"
    )
    torch.save(src.state_dict(), tmp_path / "full.pt")
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    src.eval()
    for name in ("bb.pt", "full.pt"):
        dst = TileClassifier(
            backbone="resnet18", num_classes=2, weights_path=str(tmp_path / name)
        ).eval()
        with torch.no_grad():
            torch.testing.assert_close(dst.forward_features(x), src.forward_features(x))
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ModelBundleError, match="bad.pt"):
        TileClassifier(backbone="resnet18", num_classes=2, weights_path=str(tmp_path / "bad.pt"))
    with pytest.raises(ModelBundleError, match="not found"):
        TileClassifier(
            backbone="resnet18", num_classes=2, weights_path=str(tmp_path / "missing.pt")
        )


def test_failed_torchvision_import_is_retried_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """One failed builtin registration must not leave an empty registry behind."""
    import builtins

    from histo_net.models.registry import ModelRegistry

    monkeypatch.setattr(ModelRegistry, "_builtins_loaded", False)
    monkeypatch.setattr(ModelRegistry, "_builders", {})
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name.startswith("torchvision"):
            raise ImportError("simulated broken torchvision")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    with pytest.raises(ConfigError, match="torchvision"):
        create_model("resnet18")
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert "resnet18" in list_models()
    assert create_model("resnet18").embed_dim == 512
