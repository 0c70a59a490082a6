"""Strict config schema for ``histo-net synth`` (YAML keys == long CLI options)."""

from __future__ import annotations

from pydantic import Field

from histo_net.config import StrictModel


class SynthConfig(StrictModel):
    """Synthetic cohort parameters."""

    slides: int = Field(8, ge=1, le=10_000, description="number of slides")
    seed: int = Field(0, ge=0, description="master seed; same seed -> identical cohort")
    preset: str = Field("tiny", pattern="^(tiny|small|benchmark)$")
    classes: tuple[str, ...] = Field(("neuroendocrine", "other_small_round_cell"), min_length=2,
                                     max_length=4)
    stain_jitter: float | None = Field(None, ge=0, le=2, description="None = preset default")
    format: str = Field("svs", pattern="^(svs|tiff)$")
    workers: int = Field(1, ge=1, le=64, description="slides generated in parallel")
