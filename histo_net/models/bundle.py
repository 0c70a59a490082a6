"""The model bundle (DESIGN.md section 3): one weights-only ``model.pt`` that rebuilds both models.

The file is a plain dict of tensors / str / float / int / list / dict, so it loads with
``torch.load(weights_only=True)``; :func:`load_bundle` refuses anything else. Normalisation
has one source of truth: the encoder's ``mean``/``std`` buffers in ``encoder_state``.

Format 2 adds ``pretrained_encoder``: for a frozen pretrained encoder (training with
``encoder.preset``) the bundle *references* the foundation model's weights instead of
embedding them: preset name, its recipe (``EncoderPreset.to_dict()``), the weights file's
sha256, size and training-time path; ``encoder_state`` then holds only the linear tile
head (``head.weight``, ``head.bias``). :meth:`ModelBundle.build_encoder` loads the weights
from ``--encoder-weights`` (else the recorded path) and refuses a file whose sha256
differs. Format 3 adds ``subtype_names`` / ``subtype_groups``: a MIL head trained with
``target: subtype`` classifies subtypes, and the top-level logits are derived from them
(:class:`histo_net.models.hierarchy.SubtypeHead`). Format-1 and -2 bundles load unchanged.
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
from histo_net.models.encoders import PretrainedEncoder, feature_key_for
from histo_net.models.hierarchy import SubtypeHead
from histo_net.models.mil import GatedAttentionMIL
from histo_net.models.presets import EncoderPreset
from histo_net.models.tile_cnn import TileClassifier

FORMAT_VERSION = 4
#: bundle formats this version reads (1: before pretrained encoders; 2: before subtype heads;
#: 3: before the tumour-tile count rule of the no-tumour check, which older readers would skip)
READABLE_FORMATS = (1, 2, 3, 4)
#: keys of ``pretrained_encoder`` (a frozen pretrained encoder referenced by sha256)
_PRETRAINED_KEYS = ("preset", "preset_config", "weights_sha256", "weights_path")
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
    #: frozen pretrained encoder, referenced not embedded (see the module docstring); {} = own CNN
    pretrained_encoder: dict[str, Any] = field(default_factory=dict)
    #: subtype head (``target: subtype``): MIL outputs in this order, each subtype's class index
    subtype_names: list[str] = field(default_factory=list)
    subtype_groups: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.encoder_kwargs = {k: v for k, v in self.encoder_kwargs.items()
                               if k not in ("backbone", "weights_path", *_STATE_KWARGS)}

    @property
    def positive_index(self) -> int:
        """Index of ``positive_class`` in ``class_names``."""
        return self.class_names.index(self.positive_class)

    @property
    def subtype_head(self) -> SubtypeHead | None:
        """The MIL head's subtypes (None: the MIL outputs are the top-level classes)."""
        if not self.subtype_names:
            return None
        return SubtypeHead(names=tuple(self.subtype_names), groups=tuple(int(g) for g in self.subtype_groups),
                           class_names=tuple(self.class_names))

    @property
    def is_pretrained(self) -> bool:
        """True when the encoder is a referenced pretrained preset (weights outside the bundle)."""
        return bool(self.pretrained_encoder)

    @property
    def encoder_preset(self) -> EncoderPreset | None:
        """The stored preset recipe of a pretrained encoder (None for an own tile CNN)."""
        if not self.is_pretrained:
            return None
        return EncoderPreset.from_dict(dict(self.pretrained_encoder["preset_config"]))

    @property
    def encoder_licence(self) -> str:
        """Licence of the encoder weights (a pretrained preset's; own CNNs: trained here)."""
        preset = self.encoder_preset
        return preset.licence if preset is not None else "own tile CNN trained by histo-net"

    @property
    def normalization(self) -> dict[str, list[float]]:
        """``{"mean": [3], "std": [3]}`` on the 0-255 scale, read from the encoder's buffers
        (a pretrained preset: its mean/std, scaled from 0-1)."""
        preset = self.encoder_preset
        if preset is not None:
            return {"mean": [255.0 * v for v in preset.mean], "std": [255.0 * v for v in preset.std]}
        return {key: self.encoder_state[key].flatten().tolist() for key in _STATE_KWARGS}

    def tiling_config(self, min_tissue_fraction: float | None = None) -> TilingConfig:
        """The training tiling settings with the bundle's tile spec (size, target mpp) enforced."""
        trained = dict(self.training_config.get("tiling") or {})
        trained.update(target_mpp=float(self.target_mpp), tile_size_px=int(self.tile_size_px))
        if min_tissue_fraction is not None:
            trained["min_tissue_fraction"] = float(min_tissue_fraction)
        return TilingConfig.model_validate(trained)

    def build_encoder(self, device: torch.device | None = None, *,
                      encoder_weights: Path | str | None = None) -> TileClassifier | PretrainedEncoder:
        """The tile encoder with its trained weights, in eval mode, on ``device`` (default CPU).

        A pretrained encoder loads its trunk from ``encoder_weights`` (else the path recorded
        at training time) and its tile head from the bundle; ``ModelBundleError`` (one line)
        when no file is found or its sha256 is not the recorded one.
        """
        if self.is_pretrained:
            return self._build_pretrained(device, encoder_weights)
        kwargs = {"num_classes": len(self.tile_class_names), **self.encoder_kwargs}
        model = TileClassifier(backbone=self.encoder_name, **kwargs)
        try:
            model.load_state_dict(self.encoder_state, strict=True)
        except RuntimeError as exc:
            raise ModelBundleError(f"bundle encoder state does not fit {self.encoder_name} "
                                   f"({str(exc).splitlines()[0]})") from None
        return model.to(device or torch.device("cpu")).eval()

    def _build_pretrained(self, device: torch.device | None,
                          encoder_weights: Path | str | None) -> PretrainedEncoder:
        record = self.pretrained_encoder
        preset = self.encoder_preset
        assert preset is not None
        recorded = Path(str(record.get("weights_path") or ""))
        if encoder_weights is not None:
            path = Path(encoder_weights).expanduser()
        elif str(recorded) not in ("", ".") and recorded.is_file():
            path = recorded
        else:
            raise ModelBundleError(
                f"this model uses the pretrained encoder '{preset.name}' whose weights are not in the "
                f"bundle and not at the training-time path {recorded}: pass --encoder-weights PATH "
                f"(sha256 {str(record['weights_sha256'])[:16]}...)")
        model = PretrainedEncoder(preset, weights_path=path, num_classes=len(self.tile_class_names),
                                  expected_sha256=str(record["weights_sha256"]))
        assert model.head is not None
        head = {k.removeprefix("head."): v for k, v in self.encoder_state.items()}
        try:
            model.head.load_state_dict(head, strict=True)
        except RuntimeError as exc:
            raise ModelBundleError(f"bundle tile head does not fit encoder preset '{preset.name}' "
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
        """sha256 keying the feature cache: :func:`encoder_hash` of name, kwargs and state
        (a pretrained encoder: its feature key, the weights sha256, and the head state)."""
        preset = self.encoder_preset
        if preset is not None:
            key = feature_key_for(preset, str(self.pretrained_encoder["weights_sha256"]))
            return encoder_hash(key, {"preset": preset.name}, self.encoder_state)
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
    if version not in READABLE_FORMATS:
        raise ModelBundleError(
            f"{path}: unknown bundle format_version {version!r} (expected one of "
            f"{', '.join(map(str, READABLE_FORMATS))})")
    optional = {"training_config", "metrics", "qc_reference", "versions", "format_version",
                "calibration", "domain_reference", "training_slides", "guardrail_warnings",
                "validation_summary", "pretrained_encoder", "subtype_names", "subtype_groups"}
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
    _check_pretrained(kwargs, path)
    bundle = ModelBundle(**kwargs)
    check_bundle(bundle, path)  # one clear message for an inconsistent bundle (bundle_check.py)
    return bundle


def _check_pretrained(kwargs: dict[str, Any], path: Path) -> None:
    """``ModelBundleError`` unless a ``pretrained_encoder`` record is complete and fits the head."""
    record = kwargs.get("pretrained_encoder") or {}
    if not record:
        return
    if not isinstance(record, dict) or any(k not in record for k in _PRETRAINED_KEYS):
        raise ModelBundleError(f"{path}: bundle key 'pretrained_encoder' needs "
                               f"{', '.join(_PRETRAINED_KEYS)}")
    try:
        preset = EncoderPreset.from_dict(dict(record["preset_config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelBundleError(f"{path}: bundle encoder preset recipe is malformed ({exc})") from None
    sha = str(record["weights_sha256"])
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ModelBundleError(f"{path}: bundle encoder weights_sha256 is not a sha256 hex digest")
    weight = kwargs["encoder_state"].get("head.weight")
    n_tile = len(kwargs.get("tile_class_names") or [])
    if weight is None or tuple(weight.shape) != (n_tile, preset.embed_dim):
        got = None if weight is None else tuple(weight.shape)
        raise ModelBundleError(f"{path}: bundle tile head {got} does not fit {n_tile} tile classes "
                               f"x {preset.embed_dim}-dim '{preset.name}' embeddings")
    mil_in = kwargs["mil_state"].get("embed.0.weight")
    if mil_in is not None and int(mil_in.shape[1]) != preset.embed_dim:
        raise ModelBundleError(f"{path}: the MIL model expects {int(mil_in.shape[1])}-dim embeddings "
                               f"but encoder preset '{preset.name}' gives {preset.embed_dim}")


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
