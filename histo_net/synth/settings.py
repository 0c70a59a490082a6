"""Strict config schema for ``histo-net synth`` (YAML keys == long CLI options)."""

from __future__ import annotations

from pydantic import Field, field_validator

from histo_net.config import StrictModel
from histo_net.taxonomy import TUMOUR_SUBTYPES


class SynthConfig(StrictModel):
    """Synthetic cohort parameters."""

    slides: int = Field(8, ge=1, le=10_000, description="number of slides")
    seed: int = Field(0, ge=0, description="master seed; same seed -> identical cohort")
    preset: str = Field("tiny", pattern="^(tiny|small|benchmark)$")
    difficulty: str = Field("standard", pattern="^(easy|standard)$",
                            description="easy: label-dependent nuclear size and density (fast tests)")
    subtypes: tuple[str, ...] = Field(TUMOUR_SUBTYPES, min_length=1, description="tumour subtypes to draw")
    normal_fraction: float = Field(0.0, ge=0, le=1, description="share of slides without tumour")
    tumour_fraction: tuple[float, float] | None = Field(
        None, description="tumour share of tissue, drawn uniformly in [low, high]; None = difficulty default")
    stain_jitter: float | None = Field(None, ge=0, le=2, description="None = preset default")
    format: str = Field("svs", pattern="^(svs|tiff)$")
    workers: int = Field(1, ge=1, le=64, description="slides generated in parallel")

    @field_validator("subtypes")
    @classmethod
    def _known_subtypes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in value if s not in TUMOUR_SUBTYPES]
        if unknown or len(set(value)) != len(value):
            raise ValueError(f"expected distinct names among {', '.join(TUMOUR_SUBTYPES)}")
        return value

    @field_validator("tumour_fraction")
    @classmethod
    def _fraction_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 <= value[0] <= value[1] <= 0.9:
            raise ValueError("need 0 <= low <= high <= 0.9")
        return value
