"""Slides built to trigger each outcome, from the synthetic generator's own pieces.

``histo_net/synth`` is not changed: a job is planned as usual, its render spec is altered
(tumour removed, blur or stain changed) and written with the generator's pyramidal writer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from histo_net.synth.cohort import build_spec, plan_cohort
from histo_net.synth.render import make_tile_fn
from histo_net.synth.writer import write_pyramidal_slide

VARIANTS = ("no_tumour", "blurred", "stain_shift", "small")


def write_variant_slide(path: Path, variant: str, *, seed: int = 7, preset: str = "tiny") -> Path:
    """One SVS slide of ``variant``: ``no_tumour`` (stroma, fat, lymphocytes only), ``blurred``
    (out of focus, sigma 4 um), ``stain_shift`` (haematoxylin and eosin swapped in hue and
    strength), ``small`` (a quarter of the tissue area, by cropping the slide)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}: expected one of {VARIANTS}")
    # the tiny test cohort is "easy" difficulty: the variants are drawn like its slides;
    # no_tumour is the generator's own tumour-free slide (subtype "normal")
    job = plan_cohort(1, seed, preset, difficulty="easy",
                      tumour_fraction=(0.0, 0.0) if variant == "no_tumour" else None)[0]
    spec = build_spec(job)
    if variant == "blurred":
        spec = dataclasses.replace(spec, stain=dataclasses.replace(spec.stain, blur_sigma_um=4.0))
    elif variant == "stain_shift":
        st = spec.stain
        spec = dataclasses.replace(spec, stain=dataclasses.replace(
            st, h_vec=(0.25, 0.85, 0.46), e_vec=(0.70, 0.30, 0.65), h_gain=st.h_gain * 2.0,
            e_gain=st.e_gain * 2.0))
    p = job.preset
    width, height = (job.width // 2, job.height // 2) if variant == "small" else (job.width, job.height)
    write_pyramidal_slide(Path(path), make_tile_fn(spec, p.tile_px, p.render_downsample), width=width,
                          height=height, mpp=p.mpp, tile_px=p.tile_px, fmt="svs", app_mag=10.0 / p.mpp)
    return Path(path)
