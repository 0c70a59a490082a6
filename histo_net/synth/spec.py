"""What a synthetic slide is: presets, the job of one slide, its nuisance draws and the
deterministic render spec built from them (shared by the cohort writer and the preview).

Nuisance variables (nuclear size, cell density / cytoplasm amount, lattice jitter, stain,
blur, JPEG quality, tumour fraction and foci, tissue composition) are drawn from one
distribution whatever the subtype at ``standard`` difficulty; at ``easy`` the nuclear
size and density depend on the label, which makes the task separable by global
statistics (used by fast tests).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from histo_net.errors import ConfigError
from histo_net.synth.layout import SlideLayout, make_layout
from histo_net.synth.morphology import CellNuisance, TumourStyle
from histo_net.synth.stain import StainParams, sample_stain
from histo_net.synth.subtypes import TONE, draw_morphology
from histo_net.taxonomy import NEUROENDOCRINE, NORMAL, SUBTYPE_LABEL

DIFFICULTIES: tuple[str, ...] = ("easy", "standard")
#: tumour fraction of tissue drawn per slide (uniform) when not overridden
TUMOUR_FRACTION: dict[str, tuple[float, float]] = {"easy": (0.15, 0.45), "standard": (0.02, 0.6)}
JPEG_QUALITY: tuple[int, int] = (65, 92)
#: extra defocus blur (Gaussian sigma, um) drawn per slide, uniform on [0, FOCUS_BLUR_UM]
FOCUS_BLUR_UM = 0.45
#: section thickness relative to nominal (scales both stain concentrations), drawn per slide
THICKNESS: tuple[float, float] = (0.8, 1.25)


@dataclass(frozen=True)
class Preset:
    """Slide size range (level-0 px), level-0 mpp, render downsample and default stain jitter."""

    name: str
    size_px: tuple[int, int]
    mpp: float = 0.25
    render_downsample: int = 2
    mask_downsample: int = 16
    stain_jitter: float = 0.5
    tile_px: int = 256


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", (3072, 3840)),
    "small": Preset("small", (6144, 7680)),
    "benchmark": Preset("benchmark", (10240, 12288)),
}

MANIFEST_COLUMNS: tuple[str, ...] = (
    "slide_id", "patient_id", "path", "label", "annotations", "mask", "mask_downsample",
    "tumour_fraction", "subtype", "difficulty", "seed", "preset", "width", "height", "level0_mpp",
    "stain_jitter", "nuclear_radius_um", "cell_pitch_um", "blur_sigma_um", "jpeg_quality",
    "format", "generator_seconds",
)

#: ``easy`` only: (haematoxylin, eosin) gain of the tumour cells per label: paler, pinker
#: neuroendocrine tumours and hyperchromatic other tumours, separable by colour statistics
EASY_LABEL_GAIN: dict[str, tuple[float, float]] = {
    NEUROENDOCRINE: (0.8, 1.3), "other_small_round_cell": (1.2, 0.8), "": (1.0, 1.0)}

#: outline colour per top-level label in previews and QuPath annotations
LABEL_COLORS: dict[str, tuple[int, int, int]] = {
    NEUROENDOCRINE: (230, 60, 60), "other_small_round_cell": (60, 90, 230), "": (120, 120, 120)}


@dataclass(frozen=True)
class SlideJob:
    """One slide to generate (picklable for worker processes)."""

    slide_id: str
    patient_id: str
    subtype: str
    seed: int
    width: int
    height: int
    preset: Preset
    stain_jitter: float
    fmt: str
    difficulty: str = "standard"
    tumour_fraction: tuple[float, float] | None = None  # None: the difficulty's default range

    @property
    def label(self) -> str:
        """Top-level label ("" for a normal slide)."""
        return SUBTYPE_LABEL[self.subtype]

    @property
    def ext(self) -> str:
        """File extension of the slide."""
        return "svs" if self.fmt == "svs" else "tiff"


@dataclass(frozen=True)
class SlideSpec:
    """Everything needed to render any region of one slide deterministically."""

    seed: int
    layout: SlideLayout
    style: TumourStyle
    stain: StainParams
    fibre_angle: float
    jpeg_quality: int
    subtype: str


def draw_cells(rng: np.random.Generator, difficulty: str, label: str) -> CellNuisance:
    """Nuclear size, density and jitter: one distribution for all (``standard``); at ``easy``
    neuroendocrine slides get larger, sparser nuclei than the others."""
    if difficulty == "easy":
        ne = label == NEUROENDOCRINE
        radius = rng.uniform(3.4, 3.9) if ne else rng.uniform(2.7, 3.1)
        ratio = rng.uniform(1.45, 1.65) if ne else rng.uniform(1.12, 1.25)
        return CellNuisance(float(radius), float(ratio), float(rng.uniform(0.4, 0.55) if ne else 0.9))
    return CellNuisance(float(rng.uniform(2.7, 3.9)), float(rng.uniform(1.12, 1.6)),
                        float(rng.uniform(0.7, 0.95)))


def build_spec(job: SlideJob) -> SlideSpec:
    """The deterministic render spec of a slide job. Every nuisance draw uses random streams
    that do not depend on the subtype, so two subtypes with the same seed share them."""
    if job.difficulty not in DIFFICULTIES:
        raise ConfigError(f"difficulty {job.difficulty!r}: expected one of {', '.join(DIFFICULTIES)}")
    nrng = np.random.default_rng([job.seed, 5])
    lo, hi = job.tumour_fraction or TUMOUR_FRACTION[job.difficulty]
    fraction = 0.0 if job.subtype == NORMAL else float(nrng.uniform(lo, hi))
    n_foci = int(nrng.integers(1, 4))
    rng = np.random.default_rng([job.seed, 1])
    layout = make_layout(rng, job.width, job.height, job.preset.mpp, job.preset.mask_downsample,
                         tumour_fraction=fraction, n_foci=n_foci, field_seed=job.seed * 7 + 3)
    srng = np.random.default_rng([job.seed, 2])
    stain = sample_stain(srng, job.stain_jitter)
    fibre_angle = float(srng.uniform(0, np.pi))
    # focus varies whatever the stain: extra blur on top of the stain model's
    focus_um = float(np.random.default_rng([job.seed, 8]).uniform(0.0, FOCUS_BLUR_UM))
    stain = replace(stain, blur_sigma_um=stain.blur_sigma_um + focus_um)
    thickness = float(np.random.default_rng([job.seed, 9]).uniform(*THICKNESS))
    stain = replace(stain, h_gain=stain.h_gain * thickness, e_gain=stain.e_gain * thickness)
    cells = draw_cells(np.random.default_rng([job.seed, 6]), job.difficulty, job.label)
    orientation = float(np.random.default_rng([job.seed, 7]).uniform(0, np.pi))
    morph_subtype = job.subtype if job.subtype != NORMAL else "net_well_differentiated"
    morph = draw_morphology(morph_subtype, job.difficulty, np.random.default_rng([job.seed, 3]))
    tone = TONE[morph_subtype]
    if job.difficulty == "easy":  # a label-level colour shortcut on top of the subtype tone
        hs, ho, es, eo = tone
        gain_h, gain_e = EASY_LABEL_GAIN[job.label]
        tone = (hs * gain_h, ho, es * gain_e, eo)
    style = TumourStyle(morph, cells, job.seed * 13 + 5, orientation, tone)
    jpeg = int(np.random.default_rng([job.seed, 4]).integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    return SlideSpec(job.seed, layout, style, stain, fibre_angle, jpeg, job.subtype)
