"""Synthetic H&E cohort with known truth: neuroendocrine vs other small round cell tumours,
six subtypes (see :mod:`histo_net.taxonomy`) and optional tumour-free slides.

Research software; the images are synthetic and carry no diagnostic meaning.
"""

from __future__ import annotations

from histo_net.synth.cohort import generate_cohort, generate_slide, plan_cohort
from histo_net.synth.render import render_region, tumour_tile
from histo_net.synth.spec import (
           DIFFICULTIES,
           MANIFEST_COLUMNS,
           PRESETS,
           Preset,
           SlideJob,
           SlideSpec,
           build_spec,
)
from histo_net.synth.writer import write_pyramidal_slide
from histo_net.taxonomy import (
           LABELS,
           NORMAL,
           SUBTYPE_LABEL,
           SUBTYPES,
           TAXONOMY,
           TUMOUR_SUBTYPES,
)

__all__ = ["DIFFICULTIES", "LABELS", "MANIFEST_COLUMNS", "NORMAL", "PRESETS", "SUBTYPES", "SUBTYPE_LABEL",
           "TAXONOMY", "TUMOUR_SUBTYPES", "Preset", "SlideJob", "SlideSpec", "build_spec",
           "generate_cohort", "generate_slide", "plan_cohort", "render_region", "tumour_tile",
           "write_pyramidal_slide"]
