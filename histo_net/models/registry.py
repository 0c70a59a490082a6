"""A tiny model registry in the style of torchvision's ``models/_api.py``.

The registry is a lazily populated class-level mapping (:class:`ModelRegistry`):
the built-in backbones are registered on first use by
:func:`_register_builtin_backbones`, never at import time, so import order can
not change what is registered. Builders take keyword-only arguments and return
an ``nn.Module`` whose ``forward`` maps ``(B,3,H,W)`` float images to ``(B,D)``
features and that carries an ``embed_dim: int`` attribute (D).

Pretrained encoders live beside the backbones as *presets*
(:mod:`histo_net.models.presets`): frozen recipes that also fix the tile spec,
preprocessing and pooling, built by :func:`create_encoder` into a
:class:`~histo_net.models.encoders.PretrainedEncoder` that takes raw 0-255 tiles.
They are a separate namespace: ``create_model`` builds trainable backbones only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from histo_net.errors import ConfigError
from histo_net.models.encoders import PretrainedEncoder
from histo_net.models.presets import EncoderPreset, get_preset, list_presets

Builder = Callable[..., nn.Module]


class ModelRegistry:
    """Class-level name -> builder mapping, populated lazily (see module docstring)."""

    _builders: ClassVar[dict[str, Builder]] = {}
    _builtins_loaded: ClassVar[bool] = False

    @classmethod
    def ensure_builtins(cls) -> None:
        """Register the built-in torchvision backbones once."""
        if not cls._builtins_loaded:
            _register_builtin_backbones()  # may raise (e.g. torchvision missing): retried next call
            cls._builtins_loaded = True

    @classmethod
    def add(cls, name: str, builder: Builder) -> None:
        """Add ``builder`` under ``name``; ``ValueError`` when the name is taken."""
        if name in cls._builders:
            raise ValueError(f"model '{name}' is already registered")
        cls._builders[name] = builder

    @classmethod
    def get(cls, name: str) -> Builder:
        """The builder for ``name``; ``ConfigError`` listing choices when unknown."""
        cls.ensure_builtins()
        if name not in cls._builders:
            hint = (f"; '{name}' is a pretrained encoder preset: use encoder.preset={name}"
                    if name in list_presets() else "")
            raise ConfigError(
                f"model '{name}': unknown model (choices: {', '.join(sorted(cls._builders))}){hint}"
            )
        return cls._builders[name]


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering a keyword-only builder under ``name``; ``ValueError`` on duplicates."""

    def wrap(builder: Builder) -> Builder:
        ModelRegistry.ensure_builtins()
        ModelRegistry.add(name, builder)
        return builder

    return wrap


def unregister_model(name: str) -> None:
    """Remove ``name`` (for tests and plugins); silent when absent."""
    ModelRegistry._builders.pop(name, None)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments."""
    return ModelRegistry.get(name)(**kwargs)


def list_models() -> list[str]:
    """Sorted registered model names."""
    ModelRegistry.ensure_builtins()
    return sorted(ModelRegistry._builders)


def list_encoder_presets() -> list[str]:
    """Sorted names of the pretrained encoder presets."""
    return list_presets()


def get_encoder_preset(name: str) -> EncoderPreset:
    """The preset ``name``; ``ConfigError`` listing the choices when unknown."""
    return get_preset(name)


def create_encoder(
    name: str,
    *,
    weights_path: str | Path | None = None,
    num_classes: int = 0,
    random_init: bool = False,
    expected_sha256: str | None = None,
) -> PretrainedEncoder:
    """Build preset ``name`` with weights from the local file ``weights_path`` (never a hub).

    ``expected_sha256`` refuses any other file; ``random_init=True`` instead of a file
    is for tests and benchmarks.
    """
    return PretrainedEncoder(get_preset(name), weights_path=weights_path,
                             num_classes=num_classes, random_init=random_init,
                             expected_sha256=expected_sha256)


def _strip_head(model: nn.Module, attr: str, embed_dim: int) -> nn.Module:
    """Replace the classification layer with Identity and record ``embed_dim``."""
    setattr(model, attr, nn.Identity())
    model.embed_dim = embed_dim  # type: ignore[assignment]
    return model


def _register_builtin_backbones() -> None:
    """Register torchvision backbones (``weights=None``: never downloads).

    ``ConfigError`` when torchvision cannot be imported; nothing is marked loaded then.
    """
    try:
        from torchvision import models as tvm
    except ImportError as exc:  # a broken install must not masquerade as "unknown model"
        raise ConfigError(f"built-in backbones need torchvision, which failed to import ({exc})") from None

    def resnet18() -> nn.Module:
        """ResNet-18 trunk, D=512."""
        return _strip_head(tvm.resnet18(weights=None), "fc", 512)

    def resnet50() -> nn.Module:
        """ResNet-50 trunk, D=2048."""
        return _strip_head(tvm.resnet50(weights=None), "fc", 2048)

    def efficientnet_b0() -> nn.Module:
        """EfficientNet-B0 trunk, D=1280 (dropout+linear head removed)."""
        return _strip_head(tvm.efficientnet_b0(weights=None), "classifier", 1280)

    def convnext_tiny() -> nn.Module:
        """ConvNeXt-Tiny trunk, D=768 (keeps LayerNorm2d+Flatten, drops the Linear)."""
        model = tvm.convnext_tiny(weights=None)
        model.classifier[2] = nn.Identity()
        model.embed_dim = 768  # type: ignore[assignment]
        return model

    for name, fn in (
        ("resnet18", resnet18),
        ("resnet50", resnet50),
        ("efficientnet_b0", efficientnet_b0),
        ("convnext_tiny", convnext_tiny),
    ):
        ModelRegistry._builders.setdefault(name, fn)  # idempotent if a retry follows a failure
