"""Synthetic H&E cohort with known truth: neuroendocrine vs other small round cell morphology.

Research software; the images are synthetic and carry no diagnostic meaning.
"""

from __future__ import annotations

from histo_net.synth.cohort import (
    DEFAULT_CLASSES,
    MANIFEST_COLUMNS,
    PRESETS,
    Preset,
    build_spec,
    generate_cohort,
    plan_cohort,
)
from histo_net.synth.render import SlideSpec, render_region, tumour_tile
from histo_net.synth.writer import write_pyramidal_slide

__all__ = ["DEFAULT_CLASSES", "MANIFEST_COLUMNS", "PRESETS", "Preset", "SlideSpec", "build_spec",
           "generate_cohort", "plan_cohort", "render_region", "tumour_tile", "write_pyramidal_slide"]
