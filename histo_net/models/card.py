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


def _validation_lines(bundle: ModelBundle) -> list[str]:
    summary = bundle.validation_summary
    if not summary:
        return []
    return ["", "## Held-out figures (shown in every report)", ""] + [
        f"- {k}: {_fmt(v)}" for k, v in summary.items()]


def _domain_lines(bundle: ModelBundle) -> list[str]:
    ref = bundle.domain_reference
    if ref is None:
        return ["", "## Slide checks", "", "- none fitted: every slide is treated as in domain"]
    lines = ["", "## Slide checks (not assessable / no tumour detected)", "",
             (f"Fitted on {ref.fitted_on.get('slides')} training + validation slides "
             f"(kNN bank: {ref.fitted_on.get('bank_tiles')} tiles of {ref.fitted_on.get('bank_slides')} "
             f"training slides); alpha {ref.alpha:g} for the image and embedding checks together."), "",
             "| check | fails when | limit | fitted on slides |", "|---|---|---|---|"]
    for key, limit in ref.limits.items():
        op = "value < limit" if limit.kind == "min" else "value > limit"
        lines.append(f"| {key.split(':')[0]} | {op} | {limit.limit:.4g} | {limit.n} |")
    rule = ref.tumour_rule
    if rule is not None:
        need = ", ".join(f"{rule.min_tiles(n)} of {n}" for n in (100, 1000, 10000))
        lines.append(f"| tumour_tiles (P(tumour) >= {rule.threshold:.3f}) | fewer than tumour-free tissue of "
                     f"that size reaches with P {rule.alpha:g} (tumour-free positive rate "
                     f"{rule.null_rate:.2%}; {rule.n_tiles} tiles) | {need} tiles | {rule.n_slides} |")
    rates = ", ".join(f"{k} {v:.1%}" for k, v in ref.in_sample_flag_rate.items())
    lines += ["", f"Share of the reference slides themselves failing (in-sample): {rates}"]
    return lines


def _encoder_lines(bundle: ModelBundle) -> list[str]:
    """Licence and weights provenance of the encoder (a referenced pretrained preset or ours)."""
    preset = bundle.encoder_preset
    if preset is None:
        return [f"- encoder licence: {bundle.encoder_licence}; weights inside this bundle"]
    rec = bundle.pretrained_encoder
    head = rec.get("tile_head") or {}
    return [
        (f"- encoder licence: **{preset.licence}** (pretrained preset '{preset.name}', "
         f"{preset.architecture}, {preset.embed_dim}-d, {preset.pooling} pooling; frozen)"),
        (f"- encoder weights: NOT in this bundle; referenced by sha256 `{rec.get('weights_sha256')}` "
         f"(training-time path `{rec.get('weights_path')}`); predict with --encoder-weights PATH"),
        f"- recipe checked against: {preset.recipe_source}",
        (f"- tile head: linear on the frozen features, trained from {head.get('source', '?')} "
         f"({head.get('n_tiles', '?')} tiles)"),
    ]


def write_model_card(path: Path, bundle: ModelBundle) -> None:
    """Write a human-readable markdown model card for ``bundle`` to ``path`` (atomic)."""
    lo, hi = bundle.indeterminate_band
    cfg = bundle.training_config
    data_summary = cfg.get("data_summary", {}) if isinstance(cfg, dict) else {}
    warnings = list(bundle.guardrail_warnings)
    lines = ["# histo-net model card", ""]
    if warnings:
        lines += ["## WARNINGS (read before use)", ""]
        lines += [f"- **{w}**" for w in warnings]
        lines += [""]
    lines += [
        "## Intended use",
        "Research use only. Not a medical device; not for diagnosis or patient management.",
        "Classifies H&E whole-slide images into the classes below (neuroendocrine tumour vs other",
        "small round cell tumour morphology) and highlights the tiles that drove the prediction.",
        "",
        "## Classes",
        f"- slide classes: {', '.join(bundle.class_names)} (positive: `{bundle.positive_class}`)",
        f"- tile classes: {', '.join(bundle.tile_class_names)}",
        *(["- subtype head (target: subtype): " + ", ".join(
            f"{n} -> {bundle.class_names[g]}" for n, g in zip(bundle.subtype_names, bundle.subtype_groups))
           + "; the slide call is the sum of its subtypes' probabilities"] if bundle.subtype_names else []),
        "",
        "## Tile specification",
        f"- tile size: {bundle.tile_size_px} px at {bundle.target_mpp} um/px",
        (
            f"- normalisation (0-255 scale): mean {_fmt(bundle.normalization.get('mean'))}, "
            f"std {_fmt(bundle.normalization.get('std'))}"
        ),
        f"- encoder: {bundle.encoder_name} (hash {bundle.encoder_hash()[:16]})",
        *_encoder_lines(bundle),
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
        (f"- indeterminate band: [{lo:.4g}, {hi:.4g}] (slides in it, and between the threshold and 0.5, "
        "are reported as indeterminate)"),
    ]
    cal = bundle.calibration
    if cal:
        per = ", ".join(f"{k} {v}" for k, v in (cal.get("n_per_class") or {}).items())
        lines += [
            f"- calibration rests on **{cal.get('n_slides')} slides** ({per}); method: {cal.get('method')}",
            (f"- label smoothing {_fmt(cal.get('smoothing'))}; temperature at its bound: "
            f"{cal.get('temperature_at_bound')}"),
            (f"- target error among confident calls {_fmt(cal.get('target_error'))}; estimated "
            f"{_fmt(cal.get('error_estimate'))} with {_fmt(cal.get('coverage'))} of calibration slides "
            "called confidently"),
        ]
    lines += _validation_lines(bundle) + _domain_lines(bundle)
    lines += [
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
