"""The model bundle (DESIGN.md section 3): one weights-only ``model.pt`` that rebuilds both models.

The file is a plain dict of tensors / str / float / int / list / dict, so it loads
with ``torch.load(weights_only=True)``; :func:`load_bundle` refuses anything else.
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

from histo_net.errors import ModelBundleError
from histo_net.io_utils import atomic_write_text
from histo_net.models.checkpoint import load_checkpoint, save_checkpoint
from histo_net.models.mil import GatedAttentionMIL
from histo_net.models.tile_cnn import TileClassifier

FORMAT_VERSION = 1


@dataclass
class ModelBundle:
    """Everything needed to predict a slide: class names, tile spec, both models, calibration."""

    class_names: list[str]
    tile_class_names: list[str]
    positive_class: str
    target_mpp: float
    tile_size_px: int
    normalization: dict[str, list[float]]  # {"mean": [3], "std": [3]} on the 0-255 scale
    encoder_name: str
    encoder_kwargs: dict[str, Any]  # TileClassifier kwargs except weights_path
    encoder_state: dict[str, Tensor]
    mil_kwargs: dict[str, Any]
    mil_state: dict[str, Tensor]
    temperature: float
    threshold: float
    indeterminate_band: tuple[float, float]
    training_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    qc_reference: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def positive_index(self) -> int:
        """Index of ``positive_class`` in ``class_names``."""
        return self.class_names.index(self.positive_class)

    def _encoder_ctor_kwargs(self) -> dict[str, Any]:
        kwargs = {k: v for k, v in self.encoder_kwargs.items() if k != "weights_path"}
        kwargs["backbone"] = self.encoder_name
        kwargs.setdefault("num_classes", len(self.tile_class_names))
        kwargs.setdefault("mean", list(self.normalization["mean"]))
        kwargs.setdefault("std", list(self.normalization["std"]))
        return kwargs

    def build_encoder(self, device: torch.device | None = None) -> TileClassifier:
        """The tile CNN with its trained weights, in eval mode, on ``device`` (default CPU)."""
        model = TileClassifier(**self._encoder_ctor_kwargs())
        try:
            model.load_state_dict(self.encoder_state, strict=True)
        except RuntimeError as exc:
            raise ModelBundleError(
                f"bundle encoder state does not fit {self.encoder_name} "
                f"({str(exc).splitlines()[0]})"
            ) from None
        return model.to(device or torch.device("cpu")).eval()

    def build_mil(self, device: torch.device | None = None) -> GatedAttentionMIL:
        """The slide model with its trained weights, in eval mode, on ``device`` (default CPU)."""
        model = GatedAttentionMIL(**self.mil_kwargs)
        try:
            model.load_state_dict(self.mil_state, strict=True)
        except RuntimeError as exc:
            raise ModelBundleError(
                f"bundle MIL state does not fit its kwargs ({str(exc).splitlines()[0]})"
            ) from None
        return model.to(device or torch.device("cpu")).eval()

    def encoder_hash(self) -> str:
        """sha256 keying the feature cache: :func:`encoder_hash` of name, stored kwargs and state."""
        kwargs = {k: v for k, v in self.encoder_kwargs.items() if k != "weights_path"}
        return encoder_hash(
            self.encoder_name, {"backbone": self.encoder_name, **kwargs}, self.encoder_state
        )

    def to_dict(self) -> dict[str, Any]:
        """The plain-dict file payload (tensors on CPU, tuples as lists)."""
        payload = dataclasses.asdict(self)
        payload["encoder_state"] = {k: v.detach().cpu() for k, v in self.encoder_state.items()}
        payload["mil_state"] = {k: v.detach().cpu() for k, v in self.mil_state.items()}
        payload["indeterminate_band"] = [float(x) for x in self.indeterminate_band]
        return payload


def encoder_hash(encoder_name: str, ctor_kwargs: dict[str, Any], state: dict[str, Tensor]) -> str:
    """sha256 over the encoder name, constructor kwargs (JSON, sorted keys) and state bytes.

    Normalisation constants are buffers in ``state``, so they are covered too.
    """
    digest = hashlib.sha256()
    digest.update(encoder_name.encode())
    digest.update(json.dumps(ctor_kwargs, sort_keys=True, default=str).encode())
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        if tensor.numel():
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


_REQUIRED = [f.name for f in dataclasses.fields(ModelBundle)]


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
            f"{path}: unknown bundle format_version {version!r} (expected {FORMAT_VERSION})"
        )
    missing = [name for name in _REQUIRED if name not in data]
    if missing:
        raise ModelBundleError(f"{path}: bundle is missing keys: {', '.join(missing)}")
    kwargs = {name: data[name] for name in _REQUIRED}
    band = kwargs["indeterminate_band"]
    kwargs["indeterminate_band"] = (float(band[0]), float(band[1]))
    for key in ("encoder_state", "mil_state"):
        if not isinstance(kwargs[key], dict) or not all(
            isinstance(v, Tensor) for v in kwargs[key].values()
        ):
            raise ModelBundleError(f"{path}: bundle key '{key}' is not a dict of tensors")
    return ModelBundle(**kwargs)


def library_versions() -> dict[str, str]:
    """Versions of python, torch, torchvision, numpy and histo-net (provenance)."""
    import torchvision

    from histo_net import __version__ as hn_version

    return {
        "histo_net": str(hn_version),
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # TorchVersion is a str subclass; keep the file plain
        "torchvision": str(torchvision.__version__),
        "numpy": np.__version__,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return "[" + ", ".join(_fmt(float(v)) for v in value) + "]"
    return str(value)


def _metrics_lines(metrics: dict[str, Any], prefix: str = "") -> list[str]:
    lines: list[str] = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            lines.extend(_metrics_lines(value, f"{prefix}{key}."))
        else:
            lines.append(f"| {prefix}{key} | {_fmt(value)} |")
    return lines


def write_model_card(path: Path, bundle: ModelBundle) -> None:
    """Write a human-readable markdown model card for ``bundle`` to ``path`` (atomic)."""
    lo, hi = bundle.indeterminate_band
    cfg = bundle.training_config
    data_summary = cfg.get("data_summary", {}) if isinstance(cfg, dict) else {}
    lines = [
        "# histo-net model card",
        "",
        "## Intended use",
        "Research use only. Not a medical device; not for diagnosis or patient management.",
        "Classifies H&E whole-slide images into the classes below (neuroendocrine tumour vs other",
        "small round cell tumour morphology) and highlights the tiles that drove the prediction.",
        "",
        "## Classes",
        f"- slide classes: {', '.join(bundle.class_names)} (positive: `{bundle.positive_class}`)",
        f"- tile classes: {', '.join(bundle.tile_class_names)}",
        "",
        "## Tile specification",
        f"- tile size: {bundle.tile_size_px} px at {bundle.target_mpp} um/px",
        (
            f"- normalisation (0-255 scale): mean {_fmt(bundle.normalization.get('mean'))}, "
            f"std {_fmt(bundle.normalization.get('std'))}"
        ),
        f"- encoder: {bundle.encoder_name} (hash {bundle.encoder_hash()[:16]})",
        f"- slide model: gated attention MIL {bundle.mil_kwargs}",
        "",
        "## Training data",
    ]
    lines += [f"- {k}: {_fmt(v)}" for k, v in data_summary.items()] or [
        "- see training_config in the bundle"
    ]
    lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
    lines += _metrics_lines(bundle.metrics) or ["| (none recorded) | |"]
    lines += [
        "",
        "## Calibration and decision rule",
        f"- temperature: {bundle.temperature:.4g}",
        f"- decision threshold on P({bundle.positive_class}): {bundle.threshold:.4g}",
        f"- indeterminate band: [{lo:.4g}, {hi:.4g}] (slides in it are reported as indeterminate)",
        "",
        "## Limitations",
        "- Trained on a small (possibly synthetic) cohort; performance on real slides is unknown.",
        "- Sensitive to stain, scanner and magnification shifts; QC flags unusual input.",
        "- Attention heatmaps show what influenced the model, not a validated tumour segmentation.",
        "",
        "## Versions",
    ]
    lines += [f"- {k}: {v}" for k, v in bundle.versions.items()]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
