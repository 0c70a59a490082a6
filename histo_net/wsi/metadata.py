"""Slide metadata helpers: mpp text and resolution units, the associated overview image.

Pure functions over strings and an open handle's mappings; no openslide import.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from histo_net.types import RGBImage
from histo_net.wsi.pixels import pil_to_rgb

log = logging.getLogger(__name__)

#: TIFF ResolutionUnit (name or code) -> microns per unit
UNIT_TO_UM = {"centimeter": 1e4, "inch": 25400.0, "3": 1e4, "2": 25400.0}


def mpp_from_unit(resolution: float, unit: str) -> float | None:
    """um/px from a TIFF resolution (px per unit) and its unit; None when unusable."""
    scale = UNIT_TO_UM.get(unit.strip().lower())
    if scale is None or not resolution or resolution <= 0:
        return None
    return scale / resolution


def positive_float(text: str) -> float | None:
    """A finite number > 0 parsed from metadata text, else None (NaN, negative, garbage)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def associated_overview(handle: Any, dims: tuple[int, int]) -> RGBImage | None:
    """(h,w,3) RGB of the associated ``thumbnail`` image when it covers the whole slide."""
    try:
        image = handle.associated_images.get("thumbnail")
    except Exception as exc:  # noqa: BLE001  an unreadable overview is treated as absent
        log.debug("associated thumbnail unreadable: %s", exc)
        return None
    if image is None:
        return None
    rgb = pil_to_rgb(image)
    width, height = dims
    ratio_x, ratio_y = width / rgb.shape[1], height / rgb.shape[0]
    return rgb if abs(ratio_x - ratio_y) <= 0.02 * max(ratio_x, ratio_y) else None
