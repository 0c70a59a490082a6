"""Upstream reference recipes for the encoder presets, written out independently of
``histo_net.models.presets`` (a golden copy of what the model cards / TRIDENT / STAMP
do), plus the check that our loader + module reproduce them on random weights.

Each recipe returns the publisher's model (timm / torchvision, random weights), its
PIL transform, and its pooling. The model's ``state_dict()`` is the published file
layout: these checkpoints were released as plain timm / torchvision state dicts.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HOPTIMUS = ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))

Recipe = tuple[nn.Module, Callable, Callable[[nn.Module, Tensor], Tensor]]


def _timm(name: str, **kwargs) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False, **kwargs)


def _tf(*steps, norm=IMAGENET) -> Callable:
    from torchvision import transforms as T

    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean=norm[0], std=norm[1])])


def _pooled(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def upstream_recipe(name: str) -> Recipe:
    """``(model in eval mode, PIL transform, pooling)`` exactly as the upstream loader writes it."""
    import timm
    from torchvision import models as tvm
    from torchvision import transforms as T

    bicubic = T.InterpolationMode.BICUBIC
    if name == "vit-small-test":
        model = _timm("vit_small_patch16_224", img_size=64, num_classes=0)
        return model.eval(), _tf(), _pooled
    if name == "uni":  # MahmoodLab/UNI card; TRIDENT UNIInferenceEncoder
        model = _timm("vit_large_patch16_224", img_size=224, patch_size=16, init_values=1e-5,
                      num_classes=0, dynamic_img_size=True)
        return model.eval(), _tf(T.Resize(224), T.CenterCrop(224)), _pooled
    if name == "uni2-h":  # MahmoodLab/UNI2-h card timm_kwargs; TRIDENT UNIv2InferenceEncoder
        model = _timm("vit_giant_patch14_224", img_size=224, patch_size=14, depth=24,
                      num_heads=24, init_values=1e-5, embed_dim=1536, mlp_ratio=2.66667 * 2,
                      num_classes=0, no_embed_class=True, mlp_layer=timm.layers.SwiGLUPacked,
                      act_layer=torch.nn.SiLU, reg_tokens=8, dynamic_img_size=True)
        return model.eval(), _tf(T.Resize(224), T.CenterCrop(224)), _pooled
    if name == "virchow2":  # paige-ai/Virchow2 card; TRIDENT Virchow2InferenceEncoder
        model = _timm("vit_huge_patch14_224", img_size=224, init_values=1e-5, num_classes=0,
                      reg_tokens=4, mlp_ratio=5.3375, global_pool="", dynamic_img_size=True,
                      mlp_layer=timm.layers.SwiGLUPacked, act_layer=torch.nn.SiLU)

        def cls_mean(m: nn.Module, x: Tensor) -> Tensor:
            out = m(x)  # (B,261,1280)
            return torch.cat([out[:, 0], out[:, 5:].mean(1)], dim=-1)  # (B,2560)

        return model.eval(), _tf(T.Resize(224, interpolation=bicubic)), cls_mean
    if name in ("h-optimus-0", "h-optimus-1"):  # bioptimus cards; TRIDENT HOptimus0/1
        model = _timm("vit_giant_patch14_reg4_dinov2", num_classes=0, img_size=224,
                      global_pool="token", init_values=1e-5, dynamic_img_size=True)
        return model.eval(), _tf(T.Resize(224), norm=HOPTIMUS), _pooled
    if name == "prov-gigapath":  # prov-gigapath card; TRIDENT GigaPathInferenceEncoder
        model = _timm("vit_giant_patch14_dinov2", img_size=224, in_chans=3, patch_size=16,
                      embed_dim=1536, depth=40, num_heads=24, mlp_ratio=5.33334,
                      num_classes=0, dynamic_img_size=True)
        tf = _tf(T.Resize(256, interpolation=bicubic), T.CenterCrop(224))
        return model.eval(), tf, _pooled
    if name == "resnet50-imagenet":  # torchvision layout (fc kept in the file)
        model = tvm.resnet50(weights=None)

        def avg(m: nn.Module, x: Tensor) -> Tensor:
            return torch.flatten(m.avgpool(m.layer4(_stem_to_layer3(m, x))), 1)  # (B,2048)

        return model.eval(), _tf(T.Resize(224), T.CenterCrop(224)), avg
    if name == "resnet50-trunc-imagenet":  # CLAM resnet50_trunc / TRIDENT out_indices=[3]
        model = tvm.resnet50(weights=None)

        def avg3(m: nn.Module, x: Tensor) -> Tensor:
            return _stem_to_layer3(m, x).mean(dim=(2, 3))  # (B,1024)

        return model.eval(), _tf(T.Resize(224), T.CenterCrop(224)), avg3
    raise KeyError(name)


def _stem_to_layer3(m: nn.Module, x: Tensor) -> Tensor:
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    return m.layer3(m.layer2(m.layer1(x)))


def random_tiles(n: int, size_px: int, seed: int = 0) -> np.ndarray:
    """``(n,size,size,3)`` uint8 tiles: smooth colour blobs plus noise (not flat, not pure noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size_px, 0:size_px] / size_px
    tiles = []
    for _ in range(n):
        base = rng.uniform(60, 220, 3)
        wave = np.sin(2 * np.pi * (xx * rng.uniform(1, 4) + yy * rng.uniform(1, 4)))[..., None]
        img = base + 30 * wave + rng.normal(0, 12, (size_px, size_px, 3))
        tiles.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(tiles)


def reference_embeddings(model: nn.Module, tf: Callable, pool: Callable, tiles: np.ndarray
                         ) -> Tensor:
    """The upstream pipeline on ``(n,T,T,3)`` uint8 tiles: PIL -> transform -> model -> pool."""
    from PIL import Image

    x = torch.stack([tf(Image.fromarray(t)) for t in tiles])
    with torch.inference_mode():
        return pool(model, x).float()


def save_upstream_files(state: dict[str, Tensor], folder: Path) -> dict[str, Path]:
    """The published state dict as ``model.safetensors`` and ``pytorch_model.bin``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"safetensors": folder / "model.safetensors", "bin": folder / "pytorch_model.bin"}
    save_file({k: v.contiguous() for k, v in state.items()}, str(paths["safetensors"]))
    torch.save(state, paths["bin"])
    return paths


def check_matches_upstream(name: str, folder: Path, n_tiles: int = 2,
                           keep_files: bool = False) -> dict[str, object]:
    """Build upstream ``name`` with random weights, save it in its published layout, load each
    file through :class:`PretrainedEncoder` and compare embeddings. Frees memory as it goes
    (the giants are ~4.5 GB each). Returns ``{"dim": D, fmt: max abs diff, "paths": ...}``;
    the files are deleted unless ``keep_files``.
    """
    from histo_net.models.encoders import PretrainedEncoder
    from histo_net.models.presets import get_preset
    from histo_net.models.weights import file_sha256

    preset = get_preset(name)
    torch.manual_seed(0)
    model, tf, pool = upstream_recipe(name)
    tiles = random_tiles(n_tiles, preset.tile_size_px)
    ref = reference_embeddings(model, tf, pool, tiles)  # (n,D)
    paths = save_upstream_files(model.state_dict(), folder)
    del model
    gc.collect()
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).contiguous()  # (n,3,T,T) uint8
    out: dict[str, object] = {"dim": int(ref.shape[1]), "paths": paths}
    for fmt, path in paths.items():
        encoder = PretrainedEncoder(preset, weights_path=path)
        with torch.inference_mode():
            got = encoder.forward_features(x).float()
        assert encoder.weights_sha256 == file_sha256(path)
        assert got.shape == ref.shape == (n_tiles, preset.embed_dim), (fmt, got.shape, ref.shape)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4, msg=f"{name} {fmt}")
        out[fmt] = float((got - ref).abs().max())
        del encoder, got
        gc.collect()
        if not keep_files:
            path.unlink()
    return out
