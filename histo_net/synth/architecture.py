"""Tumour architecture as fields at arbitrary points (um): septa and stromal bands,
rosette cores, palisading directions, loss of cohesion, necrosis, crush and vessels.

Evaluated once at the nuclei (which are dropped from stroma, lumina and necrosis, and
aligned where the architecture orders them) and once at the pixels (which are painted).
Every field is a pure function of the slide seed and the position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from histo_net.synth.cells import CoarseGrid, voronoi_points
from histo_net.synth.noise import hash_uniform, noise_points, uniform_noise_points
from histo_net.synth.subtypes import Morphology

ROSETTE_PITCH_UM = 32.0
VESSEL_PITCH_UM = 110.0


@dataclass(frozen=True)
class ArchFields:
    """Architecture at N points (arrays of the points' shape)."""

    stroma: np.ndarray      # float32 0..1 inside a septum / band / strand
    cleft: np.ndarray       # float32 0..1 inside a retraction cleft beside a septum
    lumen: np.ndarray       # float32 0..1 inside a rosette core (lumen or fibrillary)
    align_angle: np.ndarray  # float64 radians: long axis of an aligned nucleus
    align: np.ndarray       # float32 0..1 probability that a nucleus aligns
    loose: np.ndarray       # float32 0..1 loss of cohesion (retraction spaces between cells)
    dropout: np.ndarray     # float32 0..1 share of cells missing (alveolar spaces)
    necrosis: np.ndarray    # float32 0..1
    crush: np.ndarray       # float32 0..1
    vessel_d: np.ndarray    # float64 um to the nearest intratumoral vessel centre (inf: none)
    vessel_r: np.ndarray    # float64 um radius of that vessel


def _soft(t: np.ndarray, width: float = 0.6) -> np.ndarray:
    """0..1 ramp: 1 where ``t`` > width/2, 0 where ``t`` < -width/2 (t in um)."""
    return np.clip(t / width + 0.5, 0.0, 1.0).astype(np.float32)


def _quantities(m: Morphology, seed: int, orientation: float, pitch_um: float,
                x: np.ndarray, y: np.ndarray, angles: bool) -> dict[str, np.ndarray]:
    """Continuous architecture quantities at points (um): region selector, distances to
    septa / ribbon bands / rosette and vessel centres, noise levels; angles when asked."""
    s = seed
    q: dict[str, np.ndarray] = {"region": uniform_noise_points(x, y, 150.0, s + 1)}
    if m.cleft_share > 0:
        q["cleft_u"] = uniform_noise_points(x, y, 40.0, s + 10)
    if m.nest_share > 0:
        d1, d2, ncx, ncy = voronoi_points(x, y, m.nest_um, s + 2)
        q["border"] = (d2 - d1) / 2.0  # um to the septum between two nests
        if angles:
            q["nest_angle"] = np.arctan2(y - ncy, x - ncx)
    if m.trabecular_share > 0:
        c, si = np.cos(orientation), np.sin(orientation)
        period = m.ribbon_cells * pitch_um + 2.0 * m.septum_um
        t = (x * c + y * si) / period + 1.1 * noise_points(x, y, 90.0, s + 3)
        q["ribbon"] = np.abs(t - np.round(t)) * period  # um to the band between two ribbons
    if m.rosette_kind != "none" and m.rosette_share > 0:
        rd1, _, rcx, rcy = voronoi_points(x, y, ROSETTE_PITCH_UM, s + 4)
        has = hash_uniform(s + 5, np.round(rcx * 4).astype(np.int64), np.round(rcy * 4).astype(np.int64))
        q["rosette_d"] = rd1
        q["rosette_on"] = (has < m.rosette_share).astype(np.float64)
        if angles:
            q["rosette_angle"] = np.arctan2(y - rcy, x - rcx)
    vd1, _, vcx, vcy = voronoi_points(x, y, VESSEL_PITCH_UM, s + 6)
    vh = hash_uniform(s + 7, np.round(vcx * 4).astype(np.int64), np.round(vcy * 4).astype(np.int64))
    q["vessel_d"] = vd1
    q["vessel_r"] = np.where(vh < 0.5, 2.5 + 3.0 * vh / 0.5, 0.0)
    if m.necrosis_share > 0:
        q["necrosis_u"] = uniform_noise_points(x, y, 90.0, s + 8)
    if m.crush_share > 0:
        q["crush_u"] = uniform_noise_points(x, y, 60.0, s + 9)
    return q


def _fields(m: Morphology, q: dict[str, np.ndarray], pitch_um: float, orientation: float) -> ArchFields:
    """Architecture fields from the quantities of ``_quantities`` (any array shape)."""
    region = q["region"]
    shape = region.shape
    nested = region < m.nest_share
    trab = (region >= m.nest_share) & (region < m.nest_share + m.trabecular_share)
    has_cleft = q["cleft_u"] < m.cleft_share if "cleft_u" in q else np.zeros(shape, bool)
    stroma = np.zeros(shape, np.float32)
    cleft = np.zeros(shape, np.float32)
    align = np.zeros(shape, np.float32)
    angle = np.zeros(shape)
    loose = np.full(shape, m.discohesion, np.float32)
    dropout = np.zeros(shape, np.float32)
    for kind, mask in (("border", nested), ("ribbon", trab)):
        if kind not in q or not mask.any():
            continue
        dist = q[kind]
        band = _soft(m.septum_um - dist)
        stroma = np.where(mask, band, stroma)
        cleft = np.where(mask & has_cleft, _soft(m.septum_um + m.cleft_um - dist) * (1 - band), cleft)
        near = np.clip(1.0 - (dist - m.septum_um) / (1.3 * pitch_um), 0.0, 1.0)
        align = np.where(mask, m.palisade * near, align)
        angle = np.where(mask, q["nest_angle"] if kind == "border" and "nest_angle" in q else orientation, angle)
        if kind == "border" and m.cling > 0:
            centre = np.clip((dist - m.septum_um - 1.2 * pitch_um) / (1.5 * pitch_um), 0.0, 1.0)
            loose = np.where(mask, np.maximum(loose, m.cling * centre), loose)
            dropout = np.where(mask, 0.25 * m.cling * centre, dropout)
    lumen = np.zeros(shape, np.float32)
    if "rosette_d" in q:
        rd1 = q["rosette_d"]
        core_um = 3.0 if m.rosette_kind == "lumen" else 5.0
        host = (nested | trab) if m.rosette_kind == "lumen" else ~(nested | trab)
        on = (q["rosette_on"] > 0.5) & host & (stroma < 0.01)
        lumen = np.where(on, _soft(core_um - rd1), 0.0)
        ring = on & (rd1 < core_um + 1.6 * pitch_um)
        align = np.where(ring, 0.9, align)
        if "rosette_angle" in q:
            angle = np.where(ring, q["rosette_angle"], angle)
    vd1, vessel_r = q["vessel_d"], q["vessel_r"]
    vessel_d = np.where(vessel_r > 0, vd1, np.inf)
    necrosis = np.zeros(shape, np.float32)
    if "necrosis_u" in q:
        necrosis = np.clip((q["necrosis_u"] - (1.0 - m.necrosis_share)) / 0.05, 0.0, 1.0)
        if m.perivascular_sparing:
            necrosis = necrosis * np.clip((vd1 - 30.0) / 6.0, 0.0, 1.0)
            vessel_r = np.maximum(vessel_r, 3.0)
            vessel_d = vd1
    crush = np.zeros(shape, np.float32)
    if "crush_u" in q:
        crush = np.clip((q["crush_u"] - (1.0 - m.crush_share)) / 0.1, 0.0, 1.0)
    f32 = np.float32
    return ArchFields(stroma.astype(f32), cleft.astype(f32), lumen.astype(f32), angle, align.astype(f32),
                      loose.astype(f32), dropout.astype(f32), necrosis.astype(f32), crush.astype(f32),
                      vessel_d, vessel_r)


def architecture(m: Morphology, seed: int, orientation: float, pitch_um: float,
                 x: np.ndarray, y: np.ndarray) -> ArchFields:
    """Fields of morphology ``m`` at points ``x, y`` (um, any shape); ``pitch_um`` is the cell pitch."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return _fields(m, _quantities(m, seed, orientation, pitch_um, x, y, angles=True), pitch_um, orientation)


def architecture_grid(m: Morphology, seed: int, orientation: float, pitch_um: float,
                      xs: np.ndarray, ys: np.ndarray, step: int = 3) -> ArchFields:
    """Fields on the pixel grid ``ys x xs`` (um, uniform): the continuous quantities are
    evaluated every ``step`` pixels and interpolated bilinearly, then thresholded per pixel
    (edges stay sharp; about ``step**2`` times cheaper). ``align_angle`` is not computed."""
    grid = CoarseGrid(xs, ys, step)
    q = _quantities(m, seed, orientation, pitch_um, grid.x, grid.y, angles=False)
    return _fields(m, {k: grid.up(v) for k, v in q.items()}, pitch_um, orientation)
