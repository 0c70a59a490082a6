"""Slides, folders and manifest CSVs -> slide specs: the ONE manifest reader and path rule.

* A file path (any extension) is one slide; a missing path still becomes a spec so the
  batch records it as failed when it is opened.
* A folder is listed **non-recursively**: entries whose name ends in a slide or image
  extension (:data:`SLIDE_EXTENSIONS`) become slides; macOS ``._*`` AppleDouble files are
  skipped; folders with a slide extension (``x.svs/``) are kept so they fail visibly.
  DICOM instances (``.dcm``, ``.dicom``, or no suffix with the DICM marker) are one slide
  per folder, as OpenSlide reads a DICOM WSI series from its folder: the given folder's
  own instances become one slide named after the folder, and each sub-folder holding
  instances is one slide too. A folder passed directly that holds instances is one slide.
* ``*.csv`` is a manifest: ``slide_id,path`` required; ``patient_id``, ``label``, ``mpp``,
  ``annotations`` optional; other columns kept in ``extra``. **Relative paths resolve
  against the CSV's folder** (never the working folder), for every command.

Paths are made absolute. Slide ids are sanitised (:func:`histo_net.io_utils.sanitize_slide_id`)
and unique within a run (``_2``, ``_3``, ...); the same file given twice (a folder and a
manifest naming it) is processed once. A CLI ``--mpp`` overrides every slide; a manifest
``mpp`` applies to its row only.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from histo_net.errors import ConfigError
from histo_net.io_utils import sanitize_slide_id
from histo_net.types import MPP_MAX, MPP_MIN
from histo_net.wsi.file_checks import dicom_instances, is_dicom_file

log = logging.getLogger(__name__)

#: extensions (lower case) picked up when listing a folder
SLIDE_EXTENSIONS: frozenset[str] = frozenset({
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif",
    ".czi", ".png", ".jpg", ".jpeg",
})
MANIFEST_REQUIRED = ("slide_id", "path")
MANIFEST_KNOWN = ("slide_id", "patient_id", "path", "label", "mpp", "annotations")


@dataclass(frozen=True)
class SlideSpec:
    """One slide to process; ``slide_id`` is sanitised and unique within a run; ``path`` absolute."""

    slide_id: str
    path: Path
    patient_id: str | None = None
    label: str | None = None
    mpp: float | None = None
    annotations: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ParsedManifest:
    """Rows of a manifest CSV that parsed, and every problem found (one string each)."""

    source: Path
    columns: tuple[str, ...]
    specs: tuple[SlideSpec, ...]
    problems: tuple[str, ...]


def absolute(path: Path | str) -> Path:
    """``path`` made absolute without resolving symlinks (ids keep the name the user gave)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def resolve_manifest_path(base: Path, text: str) -> Path:
    """The one path rule: absolute as given, else relative to the manifest's folder ``base``."""
    path = Path(text).expanduser()
    return absolute(path if path.is_absolute() else base / path)


def parse_mpp(text: str) -> float:
    """A finite mpp in ``MPP_MIN..MPP_MAX`` um/px from text; ``ValueError`` otherwise."""
    value = float(text)
    if not (math.isfinite(value) and MPP_MIN <= value <= MPP_MAX):
        raise ValueError(f"mpp {text!r} outside {MPP_MIN}..{MPP_MAX} um/px")
    return value


def _read_csv(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{csv_path}: manifest not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{csv_path}: cannot read manifest ({exc})") from None
    try:
        reader = csv.DictReader(text.splitlines())
        rows = [{(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
                for raw in reader]
    except csv.Error as exc:
        raise ConfigError(f"{csv_path}: cannot parse manifest CSV ({exc})") from None
    return [c.strip() for c in (reader.fieldnames or [])], rows


def parse_manifest(csv_path: Path | str) -> ParsedManifest:
    """Parse a manifest CSV, collecting row problems instead of raising on the first.

    ``ConfigError`` only for a missing/unreadable file or missing required columns.
    Problems name CSV line numbers (the header is line 1).
    """
    csv_path = absolute(csv_path)
    columns, rows = _read_csv(csv_path)
    missing = [c for c in MANIFEST_REQUIRED if c not in columns]
    if missing:
        raise ConfigError(f"{csv_path}: manifest lacks column(s) {', '.join(missing)} "
                          f"(found: {', '.join(columns) or 'none'})")
    base = csv_path.parent
    specs: list[SlideSpec] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        if not any(row.values()):
            continue
        errs: list[str] = []
        slide_id = sanitize_slide_id(row["slide_id"]) if row.get("slide_id") else ""
        if not slide_id:
            errs.append("empty slide_id")
        elif slide_id in seen:
            errs.append(f"duplicate slide id '{row['slide_id']}' (first on line {seen[slide_id]})")
        if not row.get("path"):
            errs.append("empty path")
        mpp: float | None = None
        if row.get("mpp"):
            try:
                mpp = parse_mpp(row["mpp"])
            except ValueError as exc:
                errs.append(f"bad mpp: {exc}" if "outside" in str(exc) else f"bad mpp {row['mpp']!r}")
        if errs:
            problems.append(f"line {line}: {'; '.join(errs)}")
            continue
        seen[slide_id] = line
        specs.append(SlideSpec(
            slide_id=slide_id, path=resolve_manifest_path(base, row["path"]),
            patient_id=row.get("patient_id") or None, label=row.get("label") or None, mpp=mpp,
            annotations=resolve_manifest_path(base, row["annotations"]) if row.get("annotations") else None,
            extra={k: v for k, v in row.items() if k not in MANIFEST_KNOWN}))
    return ParsedManifest(csv_path, tuple(columns), tuple(specs), tuple(problems))


def read_manifest(csv_path: Path | str) -> list[SlideSpec]:
    """Read a slide manifest CSV; one ``ConfigError`` listing every bad row."""
    parsed = parse_manifest(csv_path)
    if parsed.problems:
        raise ConfigError(f"{parsed.source}: bad manifest rows: " + " | ".join(parsed.problems))
    if not parsed.specs:
        raise ConfigError(f"{parsed.source}: manifest has no slides")
    return list(parsed.specs)


def list_slide_folder(folder: Path) -> list[Path]:
    """Sorted slides of ``folder`` (not recursive): entries with a slide/image extension,
    sub-folders holding DICOM instances, and ``folder`` itself when it holds instances.

    macOS AppleDouble files (``._name.svs``, resource forks copied onto shared drives) are
    skipped: they are never slides. DICOM instances are never listed one by one.
    """
    folder = Path(folder)
    found: list[Path] = []
    has_dicom = False
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("._"):
            continue
        if entry.suffix.lower() in SLIDE_EXTENSIONS:
            found.append(entry)
        elif is_dicom_file(entry):
            has_dicom = True
        elif entry.is_dir() and dicom_instances(entry):
            found.append(entry)
    return ([folder] if has_dicom else []) + found


def is_dicom_folder(path: Path) -> bool:
    """True for a folder that holds DICOM instances (one slide, read by OpenSlide as a series)."""
    return Path(path).is_dir() and bool(dicom_instances(Path(path)))


def _has_non_dicom_slides(folder: Path) -> bool:
    """Whether ``folder`` lists slides other than its own DICOM instances."""
    return any(p != Path(folder) for p in list_slide_folder(folder))


def _dedup_key(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a symlink loop: keep it, it fails visibly when opened
        return str(path)


def _unique(specs: list[SlideSpec]) -> list[SlideSpec]:
    """Drop repeats of the same file (first kept) and make ids unique with ``_2``, ``_3``..."""
    used: set[str] = set()
    files: dict[str, int] = {}
    out: list[SlideSpec] = []
    for spec in specs:
        key = _dedup_key(spec.path)
        if key in files:
            kept = out[files[key]]
            log.warning("%s given twice (as %r and %r); processed once", spec.path,
                        kept.slide_id, spec.slide_id)
            out[files[key]] = _fill_missing(kept, spec)
            continue
        slide_id, n = spec.slide_id, 1
        while slide_id in used:
            n += 1
            slide_id = f"{spec.slide_id}_{n}"
        if slide_id != spec.slide_id:
            log.warning("duplicate slide id %r for %s renamed to %r", spec.slide_id, spec.path, slide_id)
            spec = replace(spec, slide_id=slide_id)
        used.add(slide_id)
        files[key] = len(out)
        out.append(spec)
    return out


def _fill_missing(kept: SlideSpec, other: SlideSpec) -> SlideSpec:
    """``kept`` with its empty fields (patient, label, mpp, annotations, extras) taken from ``other``."""
    return replace(kept, patient_id=kept.patient_id or other.patient_id, label=kept.label or other.label,
                   mpp=kept.mpp if kept.mpp is not None else other.mpp,
                   annotations=kept.annotations or other.annotations,
                   extra={**other.extra, **kept.extra})


def resolve_inputs(inputs: Sequence[str | Path], mpp_override: float | None = None) -> list[SlideSpec]:
    """Expand files, folders and manifests into unique :class:`SlideSpec` s (input order kept).

    ``ConfigError`` when a manifest is bad or nothing at all is found.
    """
    specs: list[SlideSpec] = []
    for item in inputs:
        path = absolute(item)
        if path.suffix.lower() == ".csv" and not path.is_dir():
            specs.extend(read_manifest(path))
        elif path.is_dir() and path.suffix.lower() not in SLIDE_EXTENSIONS and not (
                is_dicom_folder(path) and not _has_non_dicom_slides(path)):
            found = list_slide_folder(path)
            if not found:
                log.warning("%s: no slide files found (extensions: %s, and DICOM folders)", path,
                            " ".join(sorted(SLIDE_EXTENSIONS)))
            specs.extend(SlideSpec(sanitize_slide_id(p.stem), p) for p in found)
        else:
            specs.append(SlideSpec(sanitize_slide_id(path.stem), path))
    if not specs:
        raise ConfigError("no slides found in inputs: " + ", ".join(str(i) for i in inputs))
    if mpp_override is not None:
        specs = [replace(s, mpp=float(mpp_override)) for s in specs]
    return _unique(specs)
