"""Self-contained report.html: autoescaping jinja2, images embedded as base64 data URIs.

Nothing is ever marked safe: slide names, metadata and provenance are escaped by
jinja2; data URIs are built here from image bytes this package produced.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jinja2
import numpy as np

from histo_net.report.heatmap import image_bytes, image_mime
from histo_net.report.model import (
    INDETERMINATE_TEXT,
    NO_TUMOUR_TEXT,
    NOT_ASSESSABLE_TEXT,
    RESEARCH_USE_ONLY,
    GalleryTile,
    SlideReport,
    attention_title,
)
from histo_net.taxonomy import (
    CONFIRMATORY_STAINS,
    NEUROENDOCRINE,
    OTHER_SMALL_ROUND_CELL,
    SUBTYPE_LABEL,
    is_neuroendocrine,
)

#: confirmatory work-up per slide class (shown as context, never as a diagnosis); each panel
#: belongs to the class it names (taxonomy.is_neuroendocrine decides which one a class gets)
STAIN_PANELS: dict[str, dict[str, Any]] = {
    NEUROENDOCRINE: {
        "title": "Neuroendocrine morphology: suggested confirmation",
        "items": [
            "Synaptophysin, chromogranin A and INSM1 (neuroendocrine differentiation)",
            "Ki-67 index with mitotic count (grade; well-differentiated NET vs neuroendocrine carcinoma)",
            "TTF-1 (lung origin, small-cell carcinoma); Rb and p53 (carcinoma vs NET G3)",
            "CK20 (perinuclear dot) and Merkel cell polyomavirus in skin (Merkel cell carcinoma)",
        ],
    },
    OTHER_SMALL_ROUND_CELL: {
        "title": "Other small round cell tumour morphology: suggested work-up",
        "items": [
            "CD45 (LCA) and lineage markers for lymphoma",
            "CD99 and NKX2.2 for Ewing sarcoma",
            "Desmin and myogenin for rhabdomyosarcoma",
            "Synaptophysin, chromogranin A and INSM1 to exclude a neuroendocrine neoplasm",
        ],
    },
}


def panel_for(class_name: str) -> dict[str, Any] | None:
    """The stain panel of a slide class or subtype of the taxonomy; None for other classes
    (a bundle trained on its own classes gets no panel it does not describe)."""
    if is_neuroendocrine(class_name):
        return STAIN_PANELS[NEUROENDOCRINE]
    if class_name == OTHER_SMALL_ROUND_CELL or SUBTYPE_LABEL.get(class_name) == OTHER_SMALL_ROUND_CELL:
        return STAIN_PANELS[OTHER_SMALL_ROUND_CELL]
    return None


def subtype_panel(report: SlideReport, class_name: str) -> dict[str, Any] | None:
    """The confirmatory stains of the most probable subtype of ``class_name`` in the subtype
    differential (None without one, or when that subtype is not in the taxonomy)."""
    subs = {s: p for s, p in report.subtype_probabilities.items() if SUBTYPE_LABEL.get(s) == class_name}
    if not subs:
        return None
    best = max(subs, key=subs.__getitem__)
    stains = CONFIRMATORY_STAINS.get(best) or ()
    if not stains:
        return None
    return {"title": f"Most probable pattern: {best.replace('_', ' ')} ({subs[best]:.0%}): suggested confirmation",
            "items": list(stains)}


def context_boxes(report: SlideReport) -> list[dict[str, Any]]:
    """Stain panel(s): the called class's; both when indeterminate (the named class first);
    none when no tumour was detected or the slide is not assessable. With a subtype
    differential, each class's box is preceded by its most probable subtype's stains."""
    if report.confident:
        names = [report.decision]
    elif report.indeterminate:
        first = report.predicted_class or report.positive_class
        names = [first, *(c for c in report.probabilities if c != first)]
    else:
        return []
    panels = [p for n in names for p in (subtype_panel(report, n), panel_for(n)) if p is not None]
    return [p for i, p in enumerate(panels) if p not in panels[:i]]


def model_figures_line(report: SlideReport) -> str:
    """The model's own held-out figures, e.g. ``validation AUROC 0.98 (5 slides) ...``."""
    f = report.model_figures
    parts = []
    for key, name in (("validation", "validation"), ("test", "test")):
        if f.get(f"{key}_slides"):
            auc, bacc = f.get(f"{key}_auroc"), f.get(f"{key}_balanced_accuracy")
            parts.append(f"{name} AUROC {_fmt(auc, '.2f')}, balanced accuracy {_fmt(bacc, '.2f')} "
                         f"({f[f'{key}_slides']} slides)")
    cal = report.calibration
    if cal.get("n_slides") is not None:
        per = ", ".join(f"{k} {v}" for k, v in (cal.get("n_per_class") or {}).items())
        parts.append(f"calibration on {cal['n_slides']} slides ({cal.get('method', '?')}; {per})")
    return "; ".join(parts)


def data_uri(data: bytes, mime: str | None = None) -> str:
    """``data:<mime>;base64,...`` for bytes this package produced (mime sniffed when None)."""
    mime = mime or image_mime(data)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _fmt(value: Any, spec: str = ".3g") -> str:
    """Human-readable scalar; '\u2014' for missing/NaN."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return "\u2014" if not np.isfinite(value) else format(float(value), spec)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def _check_rows(report: SlideReport) -> list[dict[str, Any]]:
    """One row per slide check: what, value vs limit, flagged when it failed."""
    return [{"label": c.label, "value": f"{c.value:.3g} ({c.operator} limit {c.limit:.3g})"
             + ("" if c.passed else " \u2014 FAILED"), "flag": not c.passed} for c in report.checks]


def _qc_rows(qc: dict) -> list[dict[str, Any]]:
    """QC table rows: label, value text, and ``flag`` True when the value needs attention."""
    stain_ok = qc.get("stain_in_range")
    blurred = qc.get("blurred_fraction")
    mpp_text = _fmt(qc.get("mpp"), ".4g") + " \u00b5m/px"
    if qc.get("mpp_source"):
        mpp_text += f" (from {qc['mpp_source']})"
    rows = [
        {"label": "Tissue area", "value": _fmt(qc.get("tissue_area_mm2"), ".3g") + " mm\u00b2", "flag": False},
        {"label": "Tiles analysed", "value": _fmt(qc.get("tile_count")), "flag": False},
        {"label": "Slide resolution", "value": mpp_text, "flag": False},
        {"label": "Tile size", "value": f"{_fmt(qc.get('tile_size_px'))} px at "
         f"{_fmt(qc.get('target_mpp'), '.3g')} \u00b5m/px", "flag": False},
        {"label": "Blurred tiles (below the training blur threshold)",
         "value": "\u2014" if blurred is None or not np.isfinite(blurred) else f"{float(blurred):.1%}",
         "flag": False},
    ]
    if "stain_distance" in qc:  # reports of older bundles
        rows.append({"label": "Stain distance from training cohort",
                     "value": _fmt(qc.get("stain_distance"), ".2f") + (
                         "" if stain_ok is None else " (in range)" if stain_ok else " (OUT OF RANGE)"),
                     "flag": stain_ok is False})
    known = {"tissue_area_mm2", "tile_count", "mpp", "mpp_source", "tile_size_px", "target_mpp",
             "blurred_fraction", "stain_distance", "stain_in_range", "warnings"}
    for key in sorted(k for k in qc if k not in known):
        rows.append({"label": key.replace("_", " "), "value": _fmt(qc[key]), "flag": False})
    return rows


def _provenance_rows(provenance: dict) -> list[dict[str, str]]:
    """Flat key/value rows; nested mappings become ``parent.child``."""
    rows: list[dict[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key in value:
                walk(f"{prefix}.{key}" if prefix else str(key), value[key])
        else:
            rows.append({"label": prefix, "value": _fmt(value, ".4g")})

    walk("", provenance)
    return rows


def _gallery(tiles: list[GalleryTile], n_tiles: int, class_names: list[str]) -> list[dict[str, Any]]:
    """Gallery entries: JPEG data URI, position, relative attention, probabilities."""
    out = []
    for tile in tiles:
        probs = [{"name": c, "value": float(tile.probs[c]), "pct": f"{float(tile.probs[c]):.0%}"}
                 for c in class_names if c in tile.probs]
        out.append({
            "src": data_uri(image_bytes(tile.rgb, fmt="JPEG", max_side_px=256), "image/jpeg"),
            "x": int(tile.coords_level0[0]), "y": int(tile.coords_level0[1]),
            "attention_rel": f"{float(tile.attention) * max(n_tiles, 1):.2f}",
            "probs": probs,
        })
    return out


def _environment() -> jinja2.Environment:
    """Autoescaping jinja2 environment loading the packaged templates."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("histo_net.report", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_report_html(report: SlideReport, images: dict[str, bytes]) -> str:
    """The self-contained HTML report; ``images`` maps role -> PNG bytes (see render_images)."""
    probability = report.probabilities.get(report.decision)
    prob_maps = [{"cls": role[len("prob_"):], "src": data_uri(data)}
                 for role, data in images.items() if role.startswith("prob_")]
    context = {
        "r": report,
        "run_date": report.provenance.get("run_date") or "\u2014",
        "banner": RESEARCH_USE_ONLY,
        "indeterminate_text": INDETERMINATE_TEXT,
        "no_tumour_text": NO_TUMOUR_TEXT,
        "not_assessable_text": NOT_ASSESSABLE_TEXT,
        "named_pct": (None if report.predicted_class is None else
                      f"{report.probabilities.get(report.predicted_class, float('nan')):.0%}"),
        "failed": [c.describe() for c in report.failed_checks],
        "check_rows": _check_rows(report),
        "model_line": model_figures_line(report),
        "model_warnings": list(report.model_warnings),
        "tumour_share": report.qc.get("tumour_share"),
        "tumour_area": report.qc.get("tumour_area_mm2"),
        "tumour_tiles": report.qc.get("tumour_positive_tiles"),
        "probability_pct": None if probability is None else f"{probability:.0%}",
        "probabilities": [{"name": c, "value": float(p), "pct": f"{float(p):.1%}",
                           "width": f"{max(0.0, min(1.0, float(p))) * 100:.1f}"}
                          for c, p in report.probabilities.items()],
        "subtypes": [{"name": c.replace("_", " "), "pct": f"{float(p):.1%}",
                      "width": f"{max(0.0, min(1.0, float(p))) * 100:.1f}"}
                     for c, p in sorted(report.subtype_probabilities.items(), key=lambda kv: -kv[1])],
        "band": [f"{report.indeterminate_band[0]:.2f}", f"{report.indeterminate_band[1]:.2f}"],
        "thumbnail_src": data_uri(image_bytes(report.thumbnail, fmt="JPEG", max_side_px=1400),
                                  "image/jpeg"),
        "attention_src": data_uri(images["attention"]) if "attention" in images else None,
        "attention_title": attention_title(report),
        "prob_maps": prob_maps,
        "top": _gallery(report.top_tiles, report.tile_count, report.tile_class_names),
        "bottom": _gallery(report.bottom_tiles, report.tile_count, report.tile_class_names),
        "qc_rows": _qc_rows(report.qc),
        "warnings": [str(w) for w in report.qc.get("warnings") or []],
        "provenance_rows": _provenance_rows(report.provenance),
        "contexts": context_boxes(report),
    }
    return _environment().get_template("report.html.j2").render(**context)
