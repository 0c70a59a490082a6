"""Pretrained encoder presets: one frozen record per published tile encoder.

A preset pins everything that must travel together for a published encoder to
give the embeddings its authors measured: architecture and constructor
arguments, the tile the pipeline reads (``tile_size_px`` at ``target_mpp``),
the preprocessing (resize shorter side to ``resize_px``, centre-crop
``crop_px``, mean/std), the pooling that turns tokens into one vector, and the
embedding dimension. Nothing here touches the network: ``weights_url`` only
tells a person where to download the file by hand.

Every recipe was checked against the publisher's model card and the anchors'
loaders (TRIDENT ``trident/patch_encoder_models/load.py`` at commit a91fa84,
STAMP ``src/stamp/preprocessing/extractor/`` at c54ce06); ``recipe_source``
names them. Mean/std are on the 0-1 scale (as published).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from histo_net.errors import ConfigError

Library = Literal["timm", "torchvision"]
#: ``head``: the timm model's own pooled output (``num_classes=0``, its ``global_pool``);
#: ``cls_mean_patch``: class token concatenated with the mean of the patch tokens after
#: the prefix (class + register) tokens (Virchow/Virchow2); ``avg``: torchvision global
#: average pool after layer4; ``avg_layer3``: average pool after layer3 (CLAM's
#: truncated ResNet-50, 1024-d).
Pooling = Literal["head", "cls_mean_patch", "avg", "avg_layer3"]
Precision = Literal["float32", "float16", "bfloat16"]

IMAGENET_MEAN_01: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD_01: tuple[float, float, float] = (0.229, 0.224, 0.225)
HOPTIMUS_MEAN_01: tuple[float, float, float] = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD_01: tuple[float, float, float] = (0.211883, 0.230117, 0.177517)

_TRIDENT = "github.com/mahmoodlab/TRIDENT trident/patch_encoder_models/load.py"
_STAMP = "github.com/KatherLab/STAMP src/stamp/preprocessing/extractor"


@dataclass(frozen=True)
class EncoderPreset:
    """One published encoder recipe (immutable; see the module docstring)."""

    name: str
    library: Library
    architecture: str  # timm model name (no pretrained tag) or torchvision builder name
    #: constructor keyword arguments as (key, value) pairs of JSON-able values; layer
    #: classes by name (``"SwiGLUPacked"``, ``"SiLU"``), resolved in ``encoders.py``
    model_kwargs: tuple[tuple[str, Any], ...]
    tile_size_px: int  # tile edge the pipeline reads, in px at target_mpp
    target_mpp: float  # um/px the tiles are read at
    resize_px: int  # shorter side resized to this first (== tile_size_px: no resize)
    crop_px: int  # then centre-cropped to this square: the model input
    interpolation: Literal["bilinear", "bicubic"]
    mean: tuple[float, float, float]  # 0-1 scale, RGB
    std: tuple[float, float, float]  # 0-1 scale, RGB
    pooling: Pooling
    embed_dim: int  # D of forward_features
    precision: Precision  # what the recipe source runs it in on GPU (a hint)
    batch_size: int  # default tiles per forward
    channels_last: bool  # worth it for CNNs, not for ViTs
    licence: str
    recipe_source: str  # where the recipe was checked (URLs / files)
    weights_url: str  # where a person downloads the file (never fetched by histo-net)
    weights_file: str  # the publisher's file name
    requires_weights: bool = True  # False only for test presets (random init allowed)

    def __post_init__(self) -> None:
        if not (self.crop_px <= self.resize_px and self.crop_px > 0 and self.tile_size_px > 0):
            raise ValueError(f"preset '{self.name}': need 0 < crop_px <= resize_px")
        if ":" in self.architecture or "/" in self.architecture:
            raise ValueError(f"preset '{self.name}': architecture must be a local model name")

    def kwargs(self) -> dict[str, Any]:
        """The constructor keyword arguments as a fresh dict (layer classes still by name)."""
        return dict(self.model_kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field (for bundles, model cards, feature attrs)."""
        out = dataclasses.asdict(self)
        out["model_kwargs"] = self.kwargs()
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderPreset:
        """Inverse of :meth:`to_dict` (a bundle's stored recipe); ``ValueError`` when malformed."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown encoder preset fields: {', '.join(unknown)}")
        values = dict(data)
        values["model_kwargs"] = tuple(dict(values.get("model_kwargs") or {}).items())
        values["mean"] = tuple(float(v) for v in values["mean"])
        values["std"] = tuple(float(v) for v in values["std"])
        return cls(**values)

    def fingerprint(self) -> str:
        """sha256 over the fields that change the embeddings (not licence, batch, precision)."""
        keep = ("name", "library", "architecture", "model_kwargs", "tile_size_px", "target_mpp",
                "resize_px", "crop_px", "interpolation", "mean", "std", "pooling", "embed_dim")
        payload = {k: v for k, v in self.to_dict().items() if k in keep}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def check_tile_spec(self, tile_size_px: int, target_mpp: float, where: str = "config") -> None:
        """``ConfigError`` (one line) unless tiles of ``tile_size_px`` at ``target_mpp`` fit."""
        if int(tile_size_px) != self.tile_size_px or not math.isclose(
            float(target_mpp), self.target_mpp, rel_tol=1e-3
        ):
            raise ConfigError(
                f"{where}: encoder preset '{self.name}' needs {self.tile_size_px} px tiles at "
                f"{self.target_mpp:g} um/px, got {int(tile_size_px)} px at {float(target_mpp):g} "
                f"um/px (set tiling.tile_size_px={self.tile_size_px} "
                f"tiling.target_mpp={self.target_mpp:g})"
            )


def _kw(**kwargs: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(kwargs.items())


_BUILTIN_PRESETS: tuple[EncoderPreset, ...] = (
    EncoderPreset(
        name="uni", library="timm", architecture="vit_large_patch16_224",
        model_kwargs=_kw(img_size=224, patch_size=16, init_values=1e-5, num_classes=0,
                         dynamic_img_size=True),
        tile_size_px=224, target_mpp=0.5, resize_px=224, crop_px=224, interpolation="bilinear",
        mean=IMAGENET_MEAN_01, std=IMAGENET_STD_01, pooling="head", embed_dim=1024,
        precision="float16", batch_size=64, channels_last=False,
        licence="CC-BY-NC-ND-4.0 (gated; no redistribution)",
        recipe_source=f"https://huggingface.co/MahmoodLab/UNI (timm snippet); {_TRIDENT} "
                      f"UNIInferenceEncoder; {_STAMP}/uni.py",
        weights_url="https://huggingface.co/MahmoodLab/UNI", weights_file="pytorch_model.bin",
    ),
    EncoderPreset(
        name="uni2-h", library="timm", architecture="vit_giant_patch14_224",
        model_kwargs=_kw(img_size=224, patch_size=14, depth=24, num_heads=24, init_values=1e-5,
                         embed_dim=1536, mlp_ratio=2.66667 * 2, num_classes=0,
                         no_embed_class=True, mlp_layer="SwiGLUPacked", act_layer="SiLU",
                         reg_tokens=8, dynamic_img_size=True),
        tile_size_px=224, target_mpp=0.5, resize_px=224, crop_px=224, interpolation="bilinear",
        mean=IMAGENET_MEAN_01, std=IMAGENET_STD_01, pooling="head", embed_dim=1536,
        precision="bfloat16", batch_size=32, channels_last=False,
        licence="CC-BY-NC-ND-4.0 (gated; no redistribution)",
        recipe_source=f"https://huggingface.co/MahmoodLab/UNI2-h (timm_kwargs); {_TRIDENT} "
                      f"UNIv2InferenceEncoder; {_STAMP}/uni2.py",
        weights_url="https://huggingface.co/MahmoodLab/UNI2-h", weights_file="pytorch_model.bin",
    ),
    EncoderPreset(
        name="virchow2", library="timm", architecture="vit_huge_patch14_224",
        model_kwargs=_kw(img_size=224, init_values=1e-5, num_classes=0, reg_tokens=4,
                         mlp_ratio=5.3375, global_pool="", dynamic_img_size=True,
                         mlp_layer="SwiGLUPacked", act_layer="SiLU"),
        tile_size_px=224, target_mpp=0.5, resize_px=224, crop_px=224, interpolation="bicubic",
        mean=IMAGENET_MEAN_01, std=IMAGENET_STD_01, pooling="cls_mean_patch", embed_dim=2560,
        precision="float16", batch_size=32, channels_last=False,
        licence="CC-BY-NC-ND-4.0 (gated; no redistribution)",
        recipe_source=f"https://huggingface.co/paige-ai/Virchow2 (class token + mean of patch "
                      f"tokens 5:); {_TRIDENT} Virchow2InferenceEncoder ({_STAMP}/virchow2.py "
                      f"keeps the class token only, 1280-d)",
        weights_url="https://huggingface.co/paige-ai/Virchow2", weights_file="pytorch_model.bin",
    ),
    EncoderPreset(
        name="h-optimus-0", library="timm", architecture="vit_giant_patch14_reg4_dinov2",
        model_kwargs=_kw(img_size=224, num_classes=0, global_pool="token", init_values=1e-5,
                         dynamic_img_size=True),
        tile_size_px=224, target_mpp=0.5, resize_px=224, crop_px=224, interpolation="bilinear",
        mean=HOPTIMUS_MEAN_01, std=HOPTIMUS_STD_01, pooling="head", embed_dim=1536,
        precision="float16", batch_size=32, channels_last=False,
        licence="Apache-2.0",
        recipe_source=f"https://huggingface.co/bioptimus/H-optimus-0 (config.json, timm "
                      f"snippet); {_TRIDENT} HOptimus0InferenceEncoder; {_STAMP}/h_optimus_0.py",
        weights_url="https://huggingface.co/bioptimus/H-optimus-0",
        weights_file="pytorch_model.bin",
    ),
    EncoderPreset(
        name="h-optimus-1", library="timm", architecture="vit_giant_patch14_reg4_dinov2",
        model_kwargs=_kw(img_size=224, num_classes=0, global_pool="token", init_values=1e-5,
                         dynamic_img_size=True),
        tile_size_px=224, target_mpp=0.5, resize_px=224, crop_px=224, interpolation="bilinear",
        mean=HOPTIMUS_MEAN_01, std=HOPTIMUS_STD_01, pooling="head", embed_dim=1536,
        precision="float16", batch_size=32, channels_last=False,
        licence="gated; publisher's own terms on the model card (not verified offline)",
        recipe_source=f"https://huggingface.co/bioptimus/H-optimus-1; {_TRIDENT} "
                      f"HOptimus1InferenceEncoder; {_STAMP}/h_optimus_1.py",
        weights_url="https://huggingface.co/bioptimus/H-optimus-1",
        weights_file="pytorch_model.bin",
    ),
    EncoderPreset(
        name="prov-gigapath", library="timm", architecture="vit_giant_patch14_dinov2",
        model_kwargs=_kw(img_size=224, in_chans=3, patch_size=16, embed_dim=1536, depth=40,
                         num_heads=24, init_values=1e-5, mlp_ratio=5.33334, num_classes=0,
                         dynamic_img_size=True),
        tile_size_px=256, target_mpp=0.5, resize_px=256, crop_px=224, interpolation="bicubic",
        mean=IMAGENET_MEAN_01, std=IMAGENET_STD_01, pooling="head", embed_dim=1536,
        precision="float16", batch_size=32, channels_last=False,
        licence="Apache-2.0 (model card adds research-only terms)",
        recipe_source=f"https://huggingface.co/prov-gigapath/prov-gigapath (timm config, "
                      f"Resize 256 bicubic + CenterCrop 224); {_TRIDENT} "
                      f"GigaPathInferenceEncoder; {_STAMP}/gigapath.py",
        weights_url="https://huggingface.co/prov-gigapath/prov-gigapath",
        weights_file="pytorch_model.bin",
    ),
    EncoderPreset(
        name="resnet50-imagenet", library="torchvision", architecture="resnet50",
        model_kwargs=(),
        tile_size_px=224, target_mpp=0.5, resize_px=224, crop_px=224, interpolation="bilinear",
        mean=IMAGENET_MEAN_01, std=IMAGENET_STD_01, pooling="avg", embed_dim=2048,
        precision="float32", batch_size=128, channels_last=True,
        licence="BSD-3-Clause (torchvision); ImageNet terms apply to the weights",
        recipe_source="torchvision.models.resnet50 (IMAGENET1K_V1/V2 state dict); "
                      f"{_TRIDENT} ResNet50InferenceEncoder (Resize/CenterCrop 224, ImageNet stats)",
        weights_url="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
        weights_file="resnet50-11ad3fa6.pth",
    ),
    EncoderPreset(
        name="resnet50-trunc-imagenet", library="torchvision", architecture="resnet50",
        model_kwargs=(),
        tile_size_px=224, target_mpp=0.5, resize_px=224, crop_px=224, interpolation="bilinear",
        mean=IMAGENET_MEAN_01, std=IMAGENET_STD_01, pooling="avg_layer3", embed_dim=1024,
        precision="float32", batch_size=128, channels_last=True,
        licence="BSD-3-Clause (torchvision); ImageNet terms apply to the weights",
        recipe_source="CLAM resnet50_trunc / "
                      f"{_TRIDENT} ResNet50InferenceEncoder (out_indices=[3], avg pool, 1024-d)",
        weights_url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        weights_file="resnet50-0676ba61.pth",
    ),
    EncoderPreset(
        name="vit-small-test", library="timm", architecture="vit_small_patch16_224",
        model_kwargs=_kw(img_size=64, num_classes=0),
        tile_size_px=64, target_mpp=1.0, resize_px=64, crop_px=64, interpolation="bilinear",
        mean=IMAGENET_MEAN_01, std=IMAGENET_STD_01, pooling="head", embed_dim=384,
        precision="float32", batch_size=64, channels_last=False,
        licence="test only (random weights)",
        recipe_source="timm vit_small_patch16_224 at 64 px (histo-net test preset)",
        weights_url="", weights_file="", requires_weights=False,
    ),
)


def list_presets() -> list[str]:
    """Sorted names of the built-in encoder presets."""
    return sorted(p.name for p in _BUILTIN_PRESETS)


def get_preset(name: str) -> EncoderPreset:
    """The preset called ``name``; ``ConfigError`` listing the choices when unknown."""
    for preset in _BUILTIN_PRESETS:
        if preset.name == name:
            return preset
    raise ConfigError(
        f"encoder preset '{name}': unknown (choices: {', '.join(list_presets())})"
    )
