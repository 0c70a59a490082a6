"""Strict, typed configuration: one schema per CLI stage.

Unknown keys are errors that list the valid keys; YAML is read with
``yaml.safe_load`` only; ``--set a.b=value`` overrides are parsed as YAML scalars.
Stage-specific schemas live next to this base (tiling here; training and
prediction in their own modules) and all derive from :class:`StrictModel`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from histo_net.errors import ConfigError

M = TypeVar("M", bound="StrictModel")


class StrictModel(BaseModel):
    """Frozen pydantic model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TissueConfig(StrictModel):
    """Tissue detection parameters (see :func:`histo_net.wsi.tissue.tissue_mask`)."""

    thumbnail_mpp: float = Field(8.0, gt=0, description="um/px of the image tissue is detected on")
    saturation_floor: float = Field(
        0.07, ge=0, le=1,
        description="HSV saturation threshold floor, lowered towards clean glass; blank slides stay blank",
    )
    saturation_ceiling: float = Field(
        0.1, ge=0, le=1,
        description="maximum threshold; keeps pale tissue beside dense tissue",
    )
    dark_floor: int = Field(
        40, ge=0, le=255,
        description="pixels whose brightest channel is below this are not tissue (black borders, ink)",
    )
    min_tissue_area_um2: float = Field(20_000.0, ge=0, description="drop smaller tissue objects")
    min_area_max_image_fraction: float = Field(
        0.05, ge=0, le=1,
        description="the minimum tissue area is at most this fraction of the image, so a small "
        "all-tissue image (a 256 px crop) keeps its tissue")
    max_hole_area_um2: float = Field(
        250_000.0, ge=0, description="fill holes smaller than this (fat, small lumens)")
    closing_um: float = Field(16.0, ge=0, description="morphological closing radius, um")


class TilingConfig(StrictModel):
    """Tile-grid parameters. Sizes are in pixels at ``target_mpp``."""

    target_mpp: float = Field(0.5, ge=0.05, le=20, description="um/px tiles are read at")
    tile_size_px: int = Field(224, ge=16, le=4096)
    stride_px: int | None = Field(None, ge=1, description="grid step at target mpp; None = tile size")
    min_tissue_fraction: float = Field(0.5, ge=0, le=1)
    level_tolerance: float = Field(
        0.1, ge=0, le=0.5, description="a level this much coarser than target still counts"
    )
    thumbnail_max_px: int = Field(2048, ge=256, description="QC thumbnail longest side")
    max_upsample: float = Field(
        2.0, ge=1.0, description="refuse slides more than this many times coarser than target_mpp "
        "(tiles would be upsampled from a few source pixels); pass --mpp when metadata is wrong")
    tissue: TissueConfig = TissueConfig()

    @property
    def stride(self) -> int:
        """Grid step in target-mpp pixels."""
        return self.stride_px or self.tile_size_px


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """Parse ``["a.b=1", "c=x"]`` into a nested dict; values are YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        _set_dotted(out, key.strip(), yaml.safe_load(raw))
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Nested-dict merge returning a new dict; values in ``extra`` win."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_validation(cls: type[StrictModel], source: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent: Any = cls
            for part in err["loc"][:-1]:
                field = parent.model_fields.get(str(part)) if hasattr(parent, "model_fields") else None
                parent = field.annotation if field is not None else None
            valid = sorted(parent.model_fields) if hasattr(parent, "model_fields") else []
            problems.append(f"unknown key '{loc}' (valid keys: {', '.join(valid)})")
        else:
            problems.append(f"'{loc}': {err['msg']}")
    return f"{source}: invalid {cls.__name__}: " + "; ".join(problems)


def build_config(
    cls: type[M], data: dict[str, Any] | None = None, overrides: list[str] | None = None,
    source: str = "config",
) -> M:
    """Validate ``data`` merged with ``--set`` overrides into ``cls``; ``ConfigError`` on problems."""
    merged = deep_merge(data or {}, parse_overrides(overrides))
    try:
        return cls.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_validation(cls, source, exc)) from None


def read_yaml(path: Path | str) -> dict[str, Any]:
    """``yaml.safe_load`` a mapping from ``path``; ``ConfigError`` when missing or not a mapping."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: cannot read config ({reason})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: config must be a YAML mapping, got {type(loaded).__name__}")
    return loaded


def load_config(
    cls: type[M], path: Path | str | None = None, overrides: list[str] | None = None
) -> M:
    """Load ``cls`` from an optional YAML file plus ``--set`` overrides."""
    data = read_yaml(path) if path is not None else {}
    return build_config(cls, data, overrides, source=str(path) if path else "config")


def to_yaml(cfg: StrictModel) -> str:
    """The resolved config as YAML text (for writing beside outputs)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
