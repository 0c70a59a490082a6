"""The human-readable ``model_card.md`` written beside every bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from histo_net.io_utils import atomic_write_text
from histo_net.models.bundle import ModelBundle


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
