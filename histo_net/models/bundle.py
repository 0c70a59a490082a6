"""The model bundle (DESIGN.md section 3): one weights-only ``model.pt`` that rebuilds both models.

The file is a plain dict of tensors / str / float / int / list / dict, so it loads with
``torch.load(weights_only=True)``; :func:`load_bundle` refuses anything else. Normalisation
has one source of truth: the encoder's ``mean``/``std`` buffers in ``encoder_state``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from histo_net import __version__
from histo_net.config import TilingConfig
from histo_net.errors import ModelBundleError
from histo_net.features.ood import DomainReference
from histo_net.features.qc import QCReference
from histo_net.models.bundle_check import check_bundle
from histo_net.models.checkpoint import load_checkpoint, save_checkpoint
from histo_net.models.mil import GatedAttentionMIL
from histo_net.models.tile_cnn import TileClassifier

FORMAT_VERSION = 1
#: constructor arguments that live in the state dict (buffers), never in ``encoder_kwargs``
_STATE_KWARGS = ("mean", "std")


@dataclass
class ModelBundle:
    """Everything needed to predict a slide: class names, tile spec, both models, calibration."""

    class_names: list[str]
    tile_class_names: list[str]
    positive_class: str
    target_mpp: float
    tile_size_px: int
    encoder_name: str
    encoder_kwargs: dict[str, Any]  # TileClassifier kwargs except backbone, weights_path, mean, std
    encoder_state: dict[str, Tensor]
    mil_kwargs: dict[str, Any]
    mil_state: dict[str, Tensor]
    temperature: float
    threshold: float
    indeterminate_band: tuple[float, float]
    training_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    qc_reference: QCReference | None = None
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    #: what calibration rests on (:class:`histo_net.calibration.CalibrationFit` as a dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    #: limits of the slide checks (not assessable / no tumour) and the kNN bank
    domain_reference: DomainReference | None = None
    #: {"train": {"slide_ids": [...], "sha256": [...]}, "val": {...}}: evaluate refuses these
    training_slides: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    #: loud training warnings (weak validation figures, thin calibration, missing classes)
    guardrail_warnings: list[str] = field(default_factory=list)
    #: the model's own validation figures, shown near the call in every report
    validation_summary: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.encoder_kwargs = {k: v for k, v in self.encoder_kwargs.items()
                               if k not in ("backbone", "weights_path", *_STATE_KWARGS)}

    @property
    def positive_index(self) -> int:
        """Index of ``positive_class`` in ``class_names``."""
        return self.class_names.index(self.positive_class)

    @property
    def normalization(self) -> dict[str, list[float]]:
        """``{"mean": [3], "std": [3]}`` on the 0-255 scale, read from the encoder's buffers."""
        return {key: self.encoder_state[key].flatten().tolist() for key in _STATE_KWARGS}

    def tiling_config(self, min_tissue_fraction: float | None = None) -> TilingConfig:
        """The training tiling settings with the bundle's tile spec (size, target mpp) enforced."""
        trained = dict(self.training_config.get("tiling") or {})
        trained.update(target_mpp=float(self.target_mpp), tile_size_px=int(self.tile_size_px))
        if min_tissue_fraction is not None:
            trained["min_tissue_fraction"] = float(min_tissue_fraction)
        return TilingConfig.model_validate(trained)

    def build_encoder(self, device: torch.device | None = None) -> TileClassifier:
        """The tile CNN with its trained weights, in eval mode, on ``device`` (default CPU)."""
        kwargs = {"num_classes": len(self.tile_class_names), **self.encoder_kwargs}
        model = TileClassifier(backbone=self.encoder_name, **kwargs)
        try:
            model.load_state_dict(self.encoder_state, strict=True)
        except RuntimeError as exc:
            raise ModelBundleError(f"bundle encoder state does not fit {self.encoder_name} "
                                   f"({str(exc).splitlines()[0]})") from None
        return model.to(device or torch.device("cpu")).eval()

    def build_mil(self, device: torch.device | None = None) -> GatedAttentionMIL:
        """The slide model with its trained weights, in eval mode, on ``device`` (default CPU)."""
        model = GatedAttentionMIL(**self.mil_kwargs)
        try:
            model.load_state_dict(self.mil_state, strict=True)
        except RuntimeError as exc:
            raise ModelBundleError(
                f"bundle MIL state does not fit its kwargs ({str(exc).splitlines()[0]})") from None
        return model.to(device or torch.device("cpu")).eval()

    def encoder_hash(self) -> str:
        """sha256 keying the feature cache: :func:`encoder_hash` of name, kwargs and state."""
        return encoder_hash(self.encoder_name, {"backbone": self.encoder_name, **self.encoder_kwargs},
                            self.encoder_state)

    def to_dict(self) -> dict[str, Any]:
        """The plain-dict file payload (tensors on CPU, tuples as lists)."""
        payload = dataclasses.asdict(self)
        payload["encoder_state"] = {k: v.detach().cpu() for k, v in self.encoder_state.items()}
        payload["mil_state"] = {k: v.detach().cpu() for k, v in self.mil_state.items()}
        payload["indeterminate_band"] = [float(x) for x in self.indeterminate_band]
        payload["qc_reference"] = self.qc_reference.to_dict() if self.qc_reference else {}
        payload["domain_reference"] = self.domain_reference.to_dict() if self.domain_reference else {}
        return payload


def encoder_hash(encoder_name: str, ctor_kwargs: dict[str, Any], state: dict[str, Tensor]) -> str:
    """sha256 over the encoder name, constructor kwargs (JSON, sorted keys) and state bytes.

    Normalisation constants are buffers in ``state``, so they are covered too; kwargs that
    duplicate buffers (mean, std) are left out so both ways of building hash the same.
    """
    kwargs = {k: v for k, v in ctor_kwargs.items() if k not in ("weights_path", *_STATE_KWARGS)}
    digest = hashlib.sha256()
    digest.update(encoder_name.encode())
    digest.update(json.dumps(kwargs, sort_keys=True, default=str).encode())
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        if tensor.numel():
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


_FIELDS = [f.name for f in dataclasses.fields(ModelBundle)]


def save_bundle(path: Path, bundle: ModelBundle) -> None:
    """Write ``bundle`` to ``path`` atomically as a weights-only torch file."""
    save_checkpoint(Path(path), bundle.to_dict())


def load_bundle(path: Path) -> ModelBundle:
    """Read a bundle with ``weights_only=True``; ``ModelBundleError`` on any problem."""
    path = Path(path)
    data = load_checkpoint(path)
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelBundleError(
            f"{path}: unknown bundle format_version {version!r} (expected {FORMAT_VERSION})")
    optional = {"training_config", "metrics", "qc_reference", "versions", "format_version",
                "calibration", "domain_reference", "training_slides", "guardrail_warnings",
                "validation_summary"}
    missing = [name for name in _FIELDS if name not in data and name not in optional]
    if missing:
        raise ModelBundleError(f"{path}: bundle is missing keys: {', '.join(missing)}")
    kwargs = {name: data[name] for name in _FIELDS if name in data}  # drops derived keys of old files
    band = kwargs["indeterminate_band"]
    kwargs["indeterminate_band"] = (float(band[0]), float(band[1]))
    for key in ("encoder_state", "mil_state"):
        if not isinstance(kwargs[key], dict) or not all(
                isinstance(v, Tensor) for v in kwargs[key].values()):
            raise ModelBundleError(f"{path}: bundle key '{key}' is not a dict of tensors")
    try:
        kwargs["qc_reference"] = QCReference.from_dict(kwargs.get("qc_reference"))
    except (KeyError, TypeError, ValueError):
        raise ModelBundleError(f"{path}: bundle key 'qc_reference' is malformed") from None
    try:
        kwargs["domain_reference"] = DomainReference.from_dict(kwargs.get("domain_reference"))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ModelBundleError(f"{path}: bundle key 'domain_reference' is malformed") from None
    bundle = ModelBundle(**kwargs)
    check_bundle(bundle, path)  # one clear message for an inconsistent bundle (bundle_check.py)
    return bundle


def library_versions() -> dict[str, str]:
    """Versions of python, torch, torchvision, numpy and histo-net (provenance)."""
    import torchvision  # deferred: only needed when a bundle is written

    return {
        "histo_net": str(__version__),
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # TorchVersion is a str subclass; keep the file plain
        "torchvision": str(torchvision.__version__),
        "numpy": np.__version__,
    }
