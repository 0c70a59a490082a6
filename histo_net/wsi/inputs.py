"""Turn command-line inputs (slides, folders, manifest CSVs) into slide specs.

* A file path (any extension) is one slide; a missing path still becomes a spec
  so the batch records it as failed when it is opened.
* A folder is listed **non-recursively**: entries whose name ends in a slide or
  image extension (:data:`SLIDE_EXTENSIONS`) become slides; macOS ``._*``
  AppleDouble files are skipped. Entries that are folders with a slide extension (``x.svs/``) are kept
  so they fail visibly instead of vanishing.
* ``*.csv`` is a manifest: ``slide_id,path`` required, ``patient_id``, ``label``,
  ``mpp``, ``annotations`` optional, other columns kept in ``extra``; relative
  paths resolve against the CSV's folder.

Slide ids are sanitised (:func:`histo_net.io_utils.sanitize_slide_id`) and made
unique within a run by appending ``_2``, ``_3``, ... A CLI ``--mpp`` overrides
every slide; a manifest ``mpp`` applies to its row only.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from histo_net.errors import ConfigError
from histo_net.io_utils import sanitize_slide_id

log = logging.getLogger(__name__)

#: extensions (lower case) picked up when listing a folder
SLIDE_EXTENSIONS: frozenset[str] = frozenset({
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif",
    ".czi", ".png", ".jpg", ".jpeg",
})
MANIFEST_REQUIRED = ("slide_id", "path")
MANIFEST_KNOWN = ("slide_id", "patient_id", "path", "label", "mpp", "annotations")
MPP_RANGE = (0.05, 20.0)


@dataclass(frozen=True)
class SlideSpec:
    """One slide to process; ``slide_id`` is sanitised and unique within a run."""

    slide_id: str
    path: Path
    patient_id: str | None = None
    label: str | None = None
    mpp: float | None = None
    annotations: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _resolve(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else (base / path)


def _parse_mpp(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and MPP_RANGE[0] <= value <= MPP_RANGE[1]):
        raise ValueError(f"mpp {text!r} outside {MPP_RANGE[0]}..{MPP_RANGE[1]} um/px")
    return value


def read_manifest(csv_path: Path) -> list[SlideSpec]:
    """Read a slide manifest CSV; ``ConfigError`` listing every bad row (1-based data rows)."""
    csv_path = Path(csv_path)
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{csv_path}: manifest not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{csv_path}: cannot read manifest ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in MANIFEST_REQUIRED if c not in columns]
    if missing:
        raise ConfigError(f"{csv_path}: manifest lacks column(s) {', '.join(missing)} "
                          f"(found: {', '.join(columns) or 'none'})")
    base = csv_path.resolve().parent
    specs: list[SlideSpec] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for row_no, raw in enumerate(reader, start=1):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(row.values()):
            continue
        errs: list[str] = []
        slide_id = sanitize_slide_id(row.get("slide_id", "")) if row.get("slide_id") else ""
        if not slide_id:
            errs.append("empty slide_id")
        elif slide_id in seen:
            errs.append(f"duplicate slide_id {slide_id!r} (also row {seen[slide_id]})")
        if not row.get("path"):
            errs.append("empty path")
        mpp: float | None = None
        if row.get("mpp"):
            try:
                mpp = _parse_mpp(row["mpp"])
            except ValueError as exc:
                errs.append(f"bad mpp: {exc}" if "outside" in str(exc) else f"bad mpp {row['mpp']!r}")
        if errs:
            problems.append(f"row {row_no}: {'; '.join(errs)}")
            continue
        seen[slide_id] = row_no
        specs.append(SlideSpec(
            slide_id=slide_id,
            path=_resolve(base, row["path"]),
            patient_id=row.get("patient_id") or None,
            label=row.get("label") or None,
            mpp=mpp,
            annotations=_resolve(base, row["annotations"]) if row.get("annotations") else None,
            extra={k: v for k, v in row.items() if k not in MANIFEST_KNOWN},
        ))
    if problems:
        raise ConfigError(f"{csv_path}: bad manifest rows: " + " | ".join(problems))
    if not specs:
        raise ConfigError(f"{csv_path}: manifest has no slides")
    return specs


def list_slide_folder(folder: Path) -> list[Path]:
    """Sorted entries of ``folder`` (not recursive) with a slide/image extension.

    macOS AppleDouble files (``._name.svs``, resource forks copied onto shared
    drives) are skipped: they are never slides.
    """
    return sorted(
        p for p in Path(folder).iterdir()
        if not p.name.startswith("._") and p.suffix.lower() in SLIDE_EXTENSIONS
    )


def _unique(specs: list[SlideSpec]) -> list[SlideSpec]:
    used: set[str] = set()
    out = []
    for spec in specs:
        slide_id, n = spec.slide_id, 1
        while slide_id in used:
            n += 1
            slide_id = f"{spec.slide_id}_{n}"
        if slide_id != spec.slide_id:
            log.warning("duplicate slide id %r for %s renamed to %r", spec.slide_id, spec.path, slide_id)
            spec = replace(spec, slide_id=slide_id)
        used.add(slide_id)
        out.append(spec)
    return out


def resolve_inputs(inputs: Sequence[str | Path], mpp_override: float | None = None) -> list[SlideSpec]:
    """Expand files, folders and manifests into unique :class:`SlideSpec` s (input order kept).

    ``ConfigError`` when a manifest is bad or nothing at all is found.
    """
    specs: list[SlideSpec] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.suffix.lower() == ".csv" and not path.is_dir():
            specs.extend(read_manifest(path))
        elif path.is_dir() and path.suffix.lower() not in SLIDE_EXTENSIONS:
            found = list_slide_folder(path)
            if not found:
                log.warning("%s: no slide files found (extensions: %s)", path,
                            " ".join(sorted(SLIDE_EXTENSIONS)))
            specs.extend(SlideSpec(sanitize_slide_id(p.stem), p) for p in found)
        else:
            specs.append(SlideSpec(sanitize_slide_id(path.stem), path))
    if not specs:
        raise ConfigError("no slides found in inputs: " + ", ".join(str(i) for i in inputs))
    if mpp_override is not None:
        specs = [replace(s, mpp=float(mpp_override)) for s in specs]
    return _unique(specs)
