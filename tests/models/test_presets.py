"""Encoder presets: the table, the tile-spec guard and the registry entry points."""

from __future__ import annotations

import json

import pytest

from histo_net.errors import ConfigError
from histo_net.models.presets import EncoderPreset, get_preset, list_presets
from histo_net.models.registry import (
    create_model,
    get_encoder_preset,
    list_encoder_presets,
    list_models,
)

REQUIRED = {"uni", "uni2-h", "virchow2", "h-optimus-0", "h-optimus-1", "prov-gigapath",
            "resnet50-imagenet", "vit-small-test"}


def test_table_covers_the_issue_and_is_plain_data() -> None:
    assert REQUIRED <= set(list_presets()) == set(list_encoder_presets())
    prints = set()
    for name in list_presets():
        preset = get_encoder_preset(name)
        assert preset.name == name and preset.crop_px <= preset.resize_px
        assert preset.licence and preset.recipe_source
        assert preset.requires_weights == (name != "vit-small-test")
        if preset.requires_weights:
            assert preset.weights_url.startswith("https://") and preset.weights_file
        data = preset.to_dict()
        assert json.loads(json.dumps(data)) == data  # JSON-able: bundles and model cards
        prints.add(preset.fingerprint())
    assert len(prints) == len(list_presets())


@pytest.mark.parametrize(("name", "tile_px", "mpp", "dim"), [
    ("uni", 224, 0.5, 1024), ("uni2-h", 224, 0.5, 1536), ("virchow2", 224, 0.5, 2560),
    ("h-optimus-0", 224, 0.5, 1536), ("h-optimus-1", 224, 0.5, 1536),
    ("prov-gigapath", 256, 0.5, 1536), ("resnet50-imagenet", 224, 0.5, 2048),
])
def test_published_tile_specs_and_dims(name: str, tile_px: int, mpp: float, dim: int) -> None:
    preset = get_preset(name)
    assert (preset.tile_size_px, preset.target_mpp, preset.embed_dim) == (tile_px, mpp, dim)
    preset.check_tile_spec(tile_px, mpp)  # accepted


def test_prov_gigapath_resizes_256_then_crops_224_and_hoptimus_stats() -> None:
    giga = get_preset("prov-gigapath")
    assert (giga.resize_px, giga.crop_px, giga.interpolation) == (256, 224, "bicubic")
    hopt = get_preset("h-optimus-0")
    assert hopt.mean == (0.707223, 0.578729, 0.703617)
    assert hopt.std == (0.211883, 0.230117, 0.177517)
    assert get_preset("virchow2").pooling == "cls_mean_patch"


@pytest.mark.parametrize(("tile_px", "mpp"), [(224, 0.25), (256, 0.5), (224, 1.0)])
def test_wrong_tile_spec_is_one_line_config_error(tile_px: int, mpp: float) -> None:
    with pytest.raises(ConfigError) as info:
        get_preset("uni").check_tile_spec(tile_px, mpp, where="run.yaml")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("run.yaml: encoder preset 'uni' needs 224 px")
    assert "0.5 um/px" in msg and "tiling.tile_size_px=224" in msg


def test_unknown_preset_and_namespace_hint() -> None:
    with pytest.raises(ConfigError, match="unknown .*choices: .*h-optimus-0"):
        get_preset("uni3")
    assert "uni" not in list_models()  # presets are not trainable backbones
    with pytest.raises(ConfigError, match="encoder.preset=uni"):
        create_model("uni")


def test_preset_is_frozen_and_validated() -> None:
    preset = get_preset("uni")
    with pytest.raises(AttributeError):
        preset.target_mpp = 0.25  # type: ignore[misc]
    fields = preset.to_dict() | {"model_kwargs": (), "mean": preset.mean, "std": preset.std}
    with pytest.raises(ValueError, match="local model name"):
        EncoderPreset(**(fields | {"architecture": "hf-hub:MahmoodLab/uni"}))
    with pytest.raises(ValueError, match="crop_px"):
        EncoderPreset(**(fields | {"crop_px": 300}))
