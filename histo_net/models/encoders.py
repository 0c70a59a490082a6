"""The pretrained-encoder module: one ``nn.Module`` built from an :class:`EncoderPreset`.

:class:`PretrainedEncoder` takes raw tiles exactly as the pipeline reads them,
``(B,3,tile_size_px,tile_size_px)`` uint8 (or float on the 0-255 scale), and does
the preset's preprocessing inside (resize -> centre crop -> /255 -> mean/std),
so datasets, feature extraction and prediction cannot disagree about it. It has
the same ``forward_features`` / ``forward_head`` split as
:class:`histo_net.models.tile_cnn.TileClassifier`, so
:func:`histo_net.features.embed.embed_slide` uses it unchanged:

* ``forward_features(x)`` -> ``(B,D)`` float (float32, or the autocast dtype
  under autocast), ``D = embed_dim = preset.embed_dim``.
* ``forward_head(f)`` -> ``(B,C)`` logits of an optional linear tile head
  (``num_classes=C``); with ``num_classes=0`` (default, for feature extraction)
  it returns an empty ``(B,0)`` tensor, so the features loop stores
  ``tile_probs`` of shape ``(N,0)``.

The trunk is frozen (``requires_grad=False``) and always in eval mode; only the
head can train. Weights come from a local file only (``histo_net.models.weights``);
timm is always called with ``pretrained=False`` and torchvision with
``weights=None``, so no code path here can reach the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from histo_net.errors import ConfigError
from histo_net.models.presets import EncoderPreset, get_preset
from histo_net.models.weights import WeightsFile, load_state_strict, read_state_dict, state_sha256

logger = logging.getLogger(__name__)


def _timm_layer(name: str) -> Any:
    """Layer class for a name used in preset kwargs (timm import deferred: heavy)."""
    import timm.layers

    layers: dict[str, Any] = {
        "SwiGLUPacked": timm.layers.SwiGLUPacked, "SwiGLU": timm.layers.SwiGLU,
        "SiLU": nn.SiLU, "GELU": nn.GELU,
    }
    if name not in layers:
        raise ConfigError(f"encoder layer '{name}': unknown (choices: {', '.join(layers)})")
    return layers[name]


def build_trunk(preset: EncoderPreset, device: str | torch.device = "cpu") -> nn.Module:
    """The preset's architecture with its full published key layout, random or meta weights.

    ``device="meta"`` allocates nothing (for loading a file with ``assign=True``).
    For torchvision presets the ``fc`` layer is still present (the published file
    has it); :func:`_strip_for_pooling` removes it after loading.
    """
    kwargs = preset.kwargs()
    with torch.device(device):
        if preset.library == "timm":
            import timm  # deferred: heavy import

            if not timm.is_model(preset.architecture):
                raise ConfigError(
                    f"encoder preset '{preset.name}': timm {timm.__version__} has no model "
                    f"'{preset.architecture}'"
                )
            for key in ("mlp_layer", "act_layer"):
                if isinstance(kwargs.get(key), str):
                    kwargs[key] = _timm_layer(kwargs[key])
            # pretrained=False always: weights only ever come from a local file
            return timm.create_model(preset.architecture, pretrained=False, **kwargs)
        from torchvision import models as tvm  # deferred: keeps --help fast

        builder = getattr(tvm, preset.architecture, None)
        if builder is None or not callable(builder):
            raise ConfigError(
                f"encoder preset '{preset.name}': torchvision has no model '{preset.architecture}'"
            )
        return builder(weights=None, **kwargs)


def _strip_for_pooling(trunk: nn.Module, preset: EncoderPreset) -> nn.Module:
    """Drop the layers the preset's pooling does not use (torchvision ``fc``, ``layer4``)."""
    if preset.pooling in ("avg", "avg_layer3"):
        trunk.fc = nn.Identity()  # type: ignore[assignment]
    if preset.pooling == "avg_layer3":
        trunk.layer4 = nn.Identity()  # type: ignore[assignment]
    return trunk


def _pooled_dim(trunk: nn.Module, preset: EncoderPreset) -> int:
    """D the trunk + pooling produce, read off the unstripped architecture (guards a preset
    whose embed_dim is wrong)."""
    if preset.library == "timm":
        width = int(trunk.num_features)  # type: ignore[arg-type]
        return 2 * width if preset.pooling == "cls_mean_patch" else width
    if preset.pooling == "avg":
        return int(trunk.fc.in_features)  # type: ignore[union-attr]
    return int(trunk.layer4[0].conv1.in_channels)  # type: ignore[index]  # layer3's output


def feature_key_for(preset: EncoderPreset, weights_sha256: str) -> str:
    """The features-cache key of ``preset`` with weights of ``weights_sha256`` (no model built).

    sha256 over the preset fingerprint (architecture, tile spec, preprocessing, pooling)
    and the weights hash: :meth:`PretrainedEncoder.feature_key` of the loaded encoder.
    """
    payload = {"preset": preset.fingerprint(), "weights": weights_sha256}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class PretrainedEncoder(nn.Module):
    """Frozen pretrained trunk + the preset's preprocessing and pooling + optional linear head."""

    def __init__(
        self,
        preset: EncoderPreset | str,
        *,
        weights_path: Path | str | None = None,
        num_classes: int = 0,
        random_init: bool = False,
        expected_sha256: str | None = None,
    ) -> None:
        """Build from ``preset``; load ``weights_path`` (strict) or, for tests and benchmarks,
        ``random_init=True``. ``ConfigError`` when a preset that needs weights gets none;
        ``ModelBundleError`` for a missing, unsafe, corrupt or mismatching file, or one
        whose sha256 is not ``expected_sha256`` (checked before loading).
        """
        super().__init__()
        preset = get_preset(preset) if isinstance(preset, str) else preset
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if weights_path is not None and random_init:
            raise ValueError("pass weights_path or random_init=True, not both")
        if weights_path is None and preset.requires_weights and not random_init:
            raise ConfigError(
                f"encoder preset '{preset.name}' needs a local weights file "
                f"(encoder.weights=/path/{preset.weights_file or 'model.safetensors'}; "
                f"download it by hand from {preset.weights_url})"
            )
        self.preset = preset
        #: constructor arguments a bundle stores (never the trunk weights themselves)
        self.init_kwargs: dict[str, Any] = {"preset": preset.name, "num_classes": int(num_classes)}
        self.weights: WeightsFile | None = None
        if weights_path is None:
            trunk = build_trunk(preset, "cpu")
        else:
            # fail fast (sha256, format, keys) before building anything
            state, self.weights = read_state_dict(weights_path, expected_sha256)
            trunk = build_trunk(preset, "meta")
            load_state_strict(trunk, state, path=self.weights.path,
                              what=f"encoder preset '{preset.name}' ({preset.architecture})",
                              assign=True)
            del state
            trunk = trunk.float()  # published files may be fp16/bf16
            leftover = [n for n, t in [*trunk.named_parameters(), *trunk.named_buffers()]
                        if t.is_meta]
            if leftover:  # pragma: no cover - would be a bug in build_trunk, not in the file
                raise RuntimeError(f"tensors left unloaded on the meta device: {leftover[:5]}")
            logger.info("loaded %s weights from %s (sha256 %s)", preset.name, self.weights.path,
                        self.weights.sha256[:16])
        got = _pooled_dim(trunk, preset)
        self.trunk = _strip_for_pooling(trunk, preset).eval().requires_grad_(False)
        self.embed_dim: int = int(preset.embed_dim)
        if got != self.embed_dim:
            raise ConfigError(
                f"encoder preset '{preset.name}': embed_dim {self.embed_dim} but the "
                f"architecture pools to {got}"
            )
        self.num_classes = int(num_classes)
        # 0-1 scale like torchvision's Normalize; not persistent: the preset fixes them
        self.register_buffer("mean", torch.tensor(preset.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preset.std).view(1, 3, 1, 1), persistent=False)
        self.head: nn.Linear | None = (
            nn.Linear(self.embed_dim, self.num_classes) if self.num_classes > 0 else None
        )

    @property
    def weights_sha256(self) -> str | None:
        """sha256 of the loaded weights file (None for random init)."""
        return self.weights.sha256 if self.weights is not None else None

    def feature_key(self) -> str:
        """sha256 keying cached features: preset fingerprint + weights (file or in-memory) hash.

        The head is not included: it does not change ``forward_features``.
        """
        weights = self.weights_sha256 or "state:" + state_sha256(self.trunk.state_dict())
        return feature_key_for(self.preset, weights)

    def train(self, mode: bool = True) -> PretrainedEncoder:
        """Only the head follows ``mode``; the frozen trunk stays in eval mode (BN, dropout)."""
        super().train(mode)
        self.trunk.eval()
        return self

    def preprocess(self, x: Tensor) -> Tensor:
        """``(B,3,T,T)`` uint8/float 0-255, T = tile_size_px -> ``(B,3,crop,crop)`` float32 normalised.

        Resize (shorter side to ``resize_px``, antialiased, only when it differs from
        T), centre crop (torchvision's rounding), ``/255``, ``(x - mean) / std``.
        ``ConfigError`` when the tiles are not the preset's size.
        """
        p = self.preset
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (p.tile_size_px,) * 2:
            raise ConfigError(
                f"encoder preset '{p.name}' expects (B,3,{p.tile_size_px},{p.tile_size_px}) tiles "
                f"({p.tile_size_px} px at {p.target_mpp:g} um/px), got {tuple(x.shape)}"
            )
        x = x.float()  # (B,3,T,T) 0-255
        if p.resize_px != p.tile_size_px:
            x = F.interpolate(x, size=(p.resize_px, p.resize_px), mode=p.interpolation,
                              align_corners=False, antialias=True).clamp_(0.0, 255.0)
        if p.crop_px != p.resize_px:
            top = round((p.resize_px - p.crop_px) / 2.0)  # torchvision CenterCrop rounding
            x = x[..., top:top + p.crop_px, top:top + p.crop_px]  # (B,3,crop,crop)
        x = (x.div(255.0) - self.mean) / self.std  # same op order as ToTensor + Normalize
        fmt = torch.channels_last if p.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B,3,T,T)`` uint8/float 0-255 -> ``(B,D)`` embeddings with the preset's pooling."""
        x = self.preprocess(x)  # (B,3,crop,crop)
        if self.preset.pooling == "cls_mean_patch":
            tokens = self.trunk.forward_features(x)  # (B,1+R+P,W) normed tokens
            n_prefix = int(self.trunk.num_prefix_tokens)  # class + register tokens
            return torch.cat([tokens[:, 0], tokens[:, n_prefix:].mean(dim=1)], dim=-1)  # (B,2W)
        return self.trunk(x)  # (B,D): timm pooled pre-logits (num_classes=0) / torchvision avgpool

    def forward_head(self, features: Tensor) -> Tensor:
        """``(B,D)`` -> ``(B,C)`` head logits; ``(B,0)`` when built with ``num_classes=0``."""
        if self.head is None:
            return features.new_zeros((features.shape[0], 0))
        return self.head(features)  # (B,C)

    def forward(self, x: Tensor) -> Tensor:
        """``(B,3,T,T)`` -> ``(B,C)`` (``(B,0)`` without a head)."""
        return self.forward_head(self.forward_features(x))

    def head_state_dict(self) -> dict[str, Tensor]:
        """The trainable head's state (``{}`` without one): what a bundle embeds."""
        return {} if self.head is None else {k: v.detach().cpu() for k, v in
                                             self.head.state_dict().items()}
