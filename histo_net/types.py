"""Unit and shape aliases used across histo-net.

Coordinates are always level-0 pixels, top-left corner, ``(x, y)`` order.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

Microns: TypeAlias = float
"""A length in micrometres."""

MicronsPerPixel: TypeAlias = float
"""Physical pixel size in um/px (e.g. 0.25 at 40x, 0.5 at 20x)."""

MPP_MIN: MicronsPerPixel = 0.05
"""Smallest plausible slide or target pixel size, um/px (anything finer is a metadata error)."""

MPP_MAX: MicronsPerPixel = 20.0
"""Largest plausible slide or target pixel size, um/px."""

Level0Px: TypeAlias = int
"""A length or position in level-0 (full resolution) pixels."""

SquareMicrons: TypeAlias = float
"""An area in um^2."""

Coords: TypeAlias = npt.NDArray[np.int64]
"""(N, 2) int64 level-0 top-left tile corners, columns (x, y)."""

RGBImage: TypeAlias = npt.NDArray[np.uint8]
"""(H, W, 3) uint8 RGB image."""

BoolMask: TypeAlias = npt.NDArray[np.bool_]
"""(H, W) boolean mask."""
