"""Whole-bundle consistency check, run once at load: one clear message listing every problem.

An inconsistent bundle used to run with exit 0 and silently wrong output (three class
names on a two-output MIL, a positive class that is not a class, an inverted indeterminate
band) or fail every slide later with a long validation dump (an invalid tile spec).
:func:`check_bundle` checks what the bundle has; it reads fields with ``getattr`` so
bundles with new optional fields (added elsewhere) pass unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from histo_net.errors import ConfigError, ModelBundleError
from histo_net.types import MPP_MAX, MPP_MIN

#: state-dict keys whose first dimension is a head's output size
_MIL_HEAD = "classifier.weight"
_MIL_IN = "embed.0.weight"
_ENCODER_HEAD = "head.1.weight"


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _names(value: Any, what: str, minimum: int, problems: list[str]) -> list[str]:
    """A list of unique non-empty strings, else a problem line (returns [] then)."""
    if not isinstance(value, Sequence) or isinstance(value, str) or not all(
            isinstance(v, str) and v.strip() for v in value):
        problems.append(f"{what} must be a list of non-empty names, got {value!r}")
        return []
    if len(set(value)) != len(value):
        problems.append(f"{what} has duplicates: {list(value)}")
    if len(value) < minimum:
        problems.append(f"{what} needs at least {minimum} names, got {list(value)}")
    return list(value)


def _rows(state: Any, key: str) -> int | None:
    """First dimension of ``state[key]`` (a tensor), None when absent."""
    tensor = state.get(key) if isinstance(state, dict) else None
    return int(tensor.shape[0]) if tensor is not None and getattr(tensor, "ndim", 0) >= 1 else None


def _cols(state: Any, key: str) -> int | None:
    tensor = state.get(key) if isinstance(state, dict) else None
    return int(tensor.shape[1]) if tensor is not None and getattr(tensor, "ndim", 0) >= 2 else None


def _check_classes(bundle: Any, problems: list[str]) -> None:
    classes = _names(getattr(bundle, "class_names", None), "class_names", 2, problems)
    tile_classes = _names(getattr(bundle, "tile_class_names", None), "tile_class_names", 1, problems)
    positive = getattr(bundle, "positive_class", None)
    if classes and positive not in classes:
        problems.append(f"positive_class {positive!r} is not one of class_names {classes}")
    mil_kwargs = getattr(bundle, "mil_kwargs", None) or {}
    mil_state = getattr(bundle, "mil_state", None) or {}
    outputs = _rows(mil_state, _MIL_HEAD) or mil_kwargs.get("num_classes")
    subtypes = list(getattr(bundle, "subtype_names", None) or [])
    if subtypes:
        _check_subtypes(bundle, classes, subtypes, outputs, problems)
    elif classes and outputs is not None and int(outputs) != len(classes):
        problems.append(f"{len(classes)} class_names {classes} but the MIL model has {outputs} outputs")
    if mil_kwargs.get("num_classes") is not None and _rows(mil_state, _MIL_HEAD) is not None \
            and int(mil_kwargs["num_classes"]) != _rows(mil_state, _MIL_HEAD):
        problems.append(f"mil_kwargs num_classes={mil_kwargs['num_classes']} but the MIL weights "
                        f"have {_rows(mil_state, _MIL_HEAD)} outputs")
    encoder_state = getattr(bundle, "encoder_state", None) or {}
    tile_outputs = _rows(encoder_state, _ENCODER_HEAD)
    if tile_classes and tile_outputs is not None and tile_outputs != len(tile_classes):
        problems.append(f"{len(tile_classes)} tile_class_names but the tile classifier has "
                        f"{tile_outputs} outputs")
    embed_dim, mil_in = _cols(encoder_state, _ENCODER_HEAD), _cols(mil_state, _MIL_IN)
    if embed_dim is not None and mil_in is not None and embed_dim != mil_in:
        problems.append(f"the encoder gives {embed_dim}-dim embeddings but the MIL model expects {mil_in}")


def _check_subtypes(bundle: Any, classes: list[str], subtypes: list[str], outputs: Any,
                    problems: list[str]) -> None:
    """A subtype head: one MIL output and one class index per subtype, every class covered."""
    groups = list(getattr(bundle, "subtype_groups", None) or [])
    if outputs is not None and int(outputs) != len(subtypes):
        problems.append(f"{len(subtypes)} subtype_names but the MIL model has {outputs} outputs")
    if len(groups) != len(subtypes) or not all(isinstance(g, int) and 0 <= g < len(classes) for g in groups):
        problems.append(f"subtype_groups {groups} must give one class index (0..{len(classes) - 1}) "
                        f"per subtype of {subtypes}")
    elif classes and set(groups) != set(range(len(classes))):
        problems.append(f"subtype_groups {groups} leave a class of {classes} without a subtype")


def _check_decision(bundle: Any, problems: list[str]) -> None:
    threshold = getattr(bundle, "threshold", None)
    if not _finite(threshold) or not 0.0 < float(threshold) < 1.0:
        problems.append(f"threshold must be a probability in (0, 1), got {threshold!r}")
        threshold = None
    band = getattr(bundle, "indeterminate_band", None)
    if not isinstance(band, Sequence) or len(band) != 2 or not all(_finite(v) for v in band):
        problems.append(f"indeterminate_band must be two numbers (low, high), got {band!r}")
    else:
        low, high = float(band[0]), float(band[1])
        if not 0.0 <= low <= high <= 1.0:
            problems.append(f"indeterminate_band ({low:g}, {high:g}) must satisfy 0 <= low <= high <= 1")
        elif threshold is not None and not low <= float(threshold) <= high:
            problems.append(f"indeterminate_band ({low:g}, {high:g}) does not contain the threshold "
                            f"{float(threshold):g}")
    temperature = getattr(bundle, "temperature", None)
    if not _finite(temperature) or float(temperature) <= 0:
        problems.append(f"temperature must be a positive number, got {temperature!r}")


def _check_tile_spec(bundle: Any, problems: list[str]) -> None:
    mpp, size = getattr(bundle, "target_mpp", None), getattr(bundle, "tile_size_px", None)
    if not _finite(mpp) or not MPP_MIN <= float(mpp) <= MPP_MAX:
        problems.append(f"target_mpp must be {MPP_MIN}..{MPP_MAX} um/px, got {mpp!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        problems.append(f"tile_size_px must be a positive integer, got {size!r}")
    if problems or not hasattr(bundle, "tiling_config"):
        return
    try:
        bundle.tiling_config()
    except (ConfigError, ValueError, TypeError) as exc:  # pydantic ValidationError is a ValueError
        first = " ".join(str(exc).split())[:300]
        problems.append(f"tile spec / training tiling settings are invalid ({first})")


def _check_normalisation(bundle: Any, problems: list[str]) -> None:
    state = getattr(bundle, "encoder_state", None)
    if not isinstance(state, dict) or ("mean" not in state and "std" not in state):
        return  # encoders without our buffers (e.g. referenced pretrained weights) are checked elsewhere
    for key in ("mean", "std"):
        tensor = state.get(key)
        values = [] if tensor is None else [float(v) for v in tensor.flatten().tolist()]
        if len(values) != 3 or not all(math.isfinite(v) for v in values):
            problems.append(f"normalisation {key} must be 3 finite numbers, got {values}")
        elif key == "std" and min(values) <= 0:
            problems.append(f"normalisation std must be > 0, got {values}")


def bundle_problems(bundle: Any) -> list[str]:
    """Every inconsistency found in ``bundle`` (empty when it is usable)."""
    problems: list[str] = []
    _check_classes(bundle, problems)
    _check_decision(bundle, problems)
    tile_problems: list[str] = []
    _check_tile_spec(bundle, tile_problems)
    problems.extend(tile_problems)
    _check_normalisation(bundle, problems)
    return problems


def check_bundle(bundle: Any, source: Path | str) -> None:
    """``ModelBundleError`` naming ``source`` and listing every problem, once, at load."""
    problems = bundle_problems(bundle)
    if problems:
        raise ModelBundleError(f"{source}: inconsistent model bundle: " + "; ".join(problems))
