"""Tumour tissue, drawn nucleus by nucleus into H and E concentration maps.

Cells sit on a jittered lattice whose pitch, nuclear size and jitter are the slide's
nuisance draws (:class:`CellNuisance`, the same distribution for every subtype). The
subtype's :class:`~histo_net.synth.subtypes.Morphology` decides which lattice cells hold
a tumour cell (architecture), how nuclei are oriented and shaped (palisading, rosettes,
moulding), their chromatin, nucleoli, mitoses and apoptoses, and the cytoplasm and
borders between them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from histo_net.synth.architecture import ArchFields, architecture, architecture_grid
from histo_net.synth.cells import CellGrid, ellipse_rho, make_grid, nearest_two, nucleus_profile
from histo_net.synth.chromatin import chromatin_texture
from histo_net.synth.noise import noise_grid, noise_points
from histo_net.synth.subtypes import Morphology, Tone

PointTest = Callable[[np.ndarray, np.ndarray], np.ndarray]

IDENTITY_TONE: Tone = (1.0, 0.0, 1.0, 0.0)
#: stain of empty space inside tumour (retraction spaces, clefts, alveoli, vessel lumina):
#: one material for every subtype, so no subtype owns a grey level
EMPTY_H, EMPTY_E = 0.025, 0.1


@dataclass(frozen=True)
class CellNuisance:
    """Per-slide cell geometry that carries no diagnostic meaning."""

    nuclear_radius_um: float  # mean equivalent nuclear radius
    spacing_ratio: float      # cell pitch / nuclear diameter (cytoplasm amount)
    jitter: float             # lattice jitter, 0..1 of the pitch

    @property
    def pitch_um(self) -> float:
        """Lattice pitch (about the distance between neighbouring cell centres)."""
        return 2.0 * self.nuclear_radius_um * self.spacing_ratio


@dataclass(frozen=True)
class TumourStyle:
    """Everything that defines one slide's tumour."""

    morph: Morphology
    cells: CellNuisance
    seed: int
    orientation: float = 0.0  # radians: trabeculae and crush direction
    tone: Tone = IDENTITY_TONE

    @property
    def subtype(self) -> str:
        """The tumour subtype."""
        return self.morph.subtype


@dataclass(frozen=True)
class _Nuclei:
    """Per-lattice-cell nucleus attributes, (ny, nx) arrays."""

    occupied: np.ndarray
    a: np.ndarray
    b: np.ndarray
    theta: np.ndarray
    dark: np.ndarray
    mitosis: np.ndarray
    apoptotic: np.ndarray
    nucleolus: np.ndarray
    rhabdoid: np.ndarray


def _nuclei(style: TumourStyle, grid: CellGrid, arch: ArchFields, in_tumour: PointTest) -> _Nuclei:
    m, r0 = style.morph, style.cells.nuclear_radius_um
    keep = 0.97 * (1.0 - arch.dropout)
    occupied = (in_tumour(grid.cx, grid.cy) & (arch.stroma + arch.cleft < 0.5) & (arch.lumen < 0.5)
                & (arch.necrosis < 0.5) & (arch.crush < 0.5) & (grid.rand(7) < keep)
                & ~(arch.vessel_d < arch.vessel_r + 1.5))
    # scant cytoplasm: nuclei grow towards the cell pitch (nuclear-to-cytoplasmic ratio)
    room = max(0.0, 0.46 * style.cells.pitch_um / r0 - 1.0)
    r = r0 * (1.0 + m.nc_fill * room) * np.exp(m.size_cv * grid.normal(4)) * (1.0 + m.moulding)
    aligned = grid.rand(9) < arch.align
    ratio = 1.0 + m.elongation * grid.rand(8) + np.where(aligned, 0.25, 0.0)
    a, b = r * np.sqrt(ratio), r / np.sqrt(ratio)
    theta = np.where(aligned, arch.align_angle, grid.rand(6) * np.pi)
    if m.crush_share > 0:  # streaming towards the crushed areas
        flow = style.orientation + 0.8 * (noise_points(grid.cx, grid.cy, 70.0, style.seed + 36) - 0.5)
        theta = np.where(grid.rand(10) < 0.5, flow, theta)
    dark = m.darkness * (1.0 + m.dark_cv * grid.normal(11))
    u = grid.rand(3)
    mitosis = u < m.mitosis
    apoptotic = (u >= m.mitosis) & (u < m.mitosis + m.apoptosis)
    a = np.where(apoptotic, 0.5 * r0, np.where(mitosis, 1.3 * r0, a))
    b = np.where(apoptotic, 0.45 * r0, np.where(mitosis, 0.5 * r0, b))
    dark = np.where(apoptotic, 1.55, np.where(mitosis, 1.45, dark))
    nucleolus = (grid.rand(12) < m.nucleoli) & ~(mitosis | apoptotic)
    rhabdoid = grid.rand(13) < m.rhabdoid
    return _Nuclei(occupied, a, b, theta, dark, mitosis, apoptotic, nucleolus, rhabdoid)


def _owner_rho(grid: CellGrid, nuc: _Nuclei, X: np.ndarray, Y: np.ndarray, own_y: np.ndarray,
               own_x: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """Moulded nuclei: each pixel sees only its Voronoi owner's nucleus, clipped ``gap`` um short
    of the boundary, so neighbouring nuclei flatten against each other."""
    dx, dy = X - grid.cx[own_y, own_x], Y - grid.cy[own_y, own_x]
    th = nuc.theta[own_y, own_x]
    c, s = np.cos(th), np.sin(th)
    u = (dx * c + dy * s) / nuc.a[own_y, own_x]
    v = (dy * c - dx * s) / nuc.b[own_y, own_x]
    rho = np.sqrt(u * u + v * v)
    rho = np.where(gap < 0.3, np.maximum(rho, 1.0 + 0.3 * (0.3 - gap)), rho)
    return np.where(nuc.occupied[own_y, own_x], rho, np.inf).astype(np.float32)


def _cytoplasm(kind: str, xs: np.ndarray, ys: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(h, e) of the cytoplasm of ``kind`` on the grid, float32 (H, W)."""
    g = noise_grid(xs, ys, 0.7, seed)
    if kind == "eosinophilic":  # moderate, finely granular
        return 0.04 + 0.02 * g, 0.40 + 0.12 * g
    if kind == "amphophilic":  # scant, greyish
        return 0.07 + 0.02 * g, 0.30 + 0.08 * g
    if kind == "basophilic":
        return 0.09 + 0.02 * g, 0.25 + 0.06 * g
    if kind == "clear":  # glycogen: pale with vacuoles
        vac = np.clip((noise_grid(xs, ys, 1.6, seed + 1) - 0.6) * 3, 0, 1)
        return 0.04 + 0.01 * g, (0.27 + 0.06 * g) * (1 - 0.45 * vac)
    return 0.04 + 0.02 * g, 0.42 + 0.14 * g  # dense_eosinophilic


def _stroma(kind: str, xs: np.ndarray, ys: np.ndarray, seed: int, orientation: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """(h, e) of intratumoral septa / bands: collagen with fibroblasts and capillaries."""
    X, Y = np.meshgrid(xs, ys)
    c, s = np.cos(orientation), np.sin(orientation)
    fib = noise_points((X * c + Y * s) / 8.0, (Y * c - X * s) / 1.2, 1.0, seed)
    base = {"fibrovascular": 0.55, "collagen": 0.78, "fibrous": 0.66}[kind]
    e = base + 0.18 * fib
    spindle = noise_points((X * c + Y * s) / 3.5, (Y * c - X * s) / 0.7, 1.0, seed + 1) > 0.82
    h = 0.03 + 0.55 * spindle * (noise_grid(xs, ys, 6.0, seed + 2) > 0.5)
    if kind == "fibrovascular":
        rbc = (noise_grid(xs, ys, 2.0, seed + 3) > 0.7) & (noise_grid(xs, ys, 12.0, seed + 4) > 0.6)
        e = np.where(rbc, 1.1, e)
    return h.astype(np.float32), e.astype(np.float32)


@dataclass(frozen=True)
class TumourLayers:
    """Un-toned tumour stain layers, each (H, W) float32.

    ``h_cell, e_cell``: tumour-cell cytoplasm (and crush); ``h_mat, e_mat``: the shared
    materials between cells (empty space, septa, lumina, vessels, necrosis), never toned;
    ``cell_w``: weight of the cell layer; ``h_nuc, alpha``: nuclei and their coverage.
    """

    h_cell: np.ndarray
    e_cell: np.ndarray
    h_mat: np.ndarray
    e_mat: np.ndarray
    cell_w: np.ndarray
    h_nuc: np.ndarray
    alpha: np.ndarray


def apply_tone(layers: TumourLayers, tone: Tone) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(h_bg, e_bg, h_nuc, nuc_alpha) float32 (H, W): the tone map applied to tumour cells and
    nuclei only, so shared materials keep one colour whatever the subtype."""
    hs, ho, es, eo = tone
    w = layers.cell_w
    h_bg = np.maximum(layers.h_cell * hs + ho, 0) * w + layers.h_mat * (1 - w)
    e_bg = np.maximum(layers.e_cell * es + eo, 0) * w + layers.e_mat * (1 - w)
    h_nuc = layers.h_nuc * hs + ho * layers.alpha
    return h_bg.astype(np.float32), e_bg.astype(np.float32), h_nuc.astype(np.float32), layers.alpha


def _blend(base: np.ndarray, value: np.ndarray | float, weight: np.ndarray) -> np.ndarray:
    return base * (1 - weight) + value * weight


def render_tumour(style: TumourStyle, xs: np.ndarray, ys: np.ndarray, in_tumour: PointTest
                  ) -> TumourLayers:
    """Un-toned tumour layers on the pixel grid ``ys x xs`` (um centres); nuclei are those
    whose centres pass ``in_tumour``. Tone them with :func:`apply_tone`."""
    m, s = style.morph, style.seed
    pitch = style.cells.pitch_um
    grid = make_grid(xs, ys, pitch, style.cells.jitter, s + 21)
    X, Y = np.meshgrid(xs, ys)
    arch_c = architecture(m, s, style.orientation, pitch, grid.cx, grid.cy)
    arch = architecture_grid(m, s, style.orientation, pitch, xs, ys)
    nuc = _nuclei(style, grid, arch_c, in_tumour)
    d1, d2, vy, vx = nearest_two(grid, xs, ys)
    wobble = m.contour * (noise_grid(xs, ys, 1.1, s + 41) - 0.5) * 2.0
    if m.moulding > 0:
        rho = _owner_rho(grid, nuc, X, Y, vy, vx, d2 - d1) * (1.0 + wobble)
        oy, ox = vy, vx
    else:
        rho, oy, ox = ellipse_rho(grid, xs, ys, nuc.occupied, nuc.a, nuc.b, nuc.theta, wobble)
    prof = nucleus_profile(rho, rim=m.rim)
    special = (nuc.mitosis | nuc.apoptotic)[oy, ox]
    tex = np.where(special, 1.0, chromatin_texture(m.chromatin, xs, ys, s + 42, m.chromatin_contrast))
    h_nuc = prof * tex * nuc.dark[oy, ox]
    # cytoplasm and cell borders; discohesive cells retract from each other
    h_c, e_c = _cytoplasm(m.cytoplasm, xs, ys, s + 30)
    e_c = e_c * (1.0 + 0.12 * (grid.rand(16) - 0.5))[vy, vx]  # cell-to-cell variation
    e_c = np.where(nuc.rhabdoid[vy, vx] & nuc.occupied[vy, vx], 0.95 + 0.1 * (e_c - 0.5), e_c)
    e_c = e_c + 0.35 * m.border * np.clip(1.0 - (d2 - d1) / 0.8, 0, 1)
    body_r = 0.5 * pitch * (1.8 - 0.8 * arch.loose)
    body = (np.clip((body_r - d1) / 0.6 + 0.5, 0, 1)
            * np.clip((d2 - d1 - 1.6 * arch.loose) / 0.4 + 0.5, 0, 1))
    # a lattice cell without a nucleus is cytoplasm of its neighbours, except where cells drop out
    present = nuc.occupied[vy, vx] | (arch.dropout < 0.02)
    w = np.where(arch.loose > 0.05, body * present, 1.0).astype(np.float32)
    # around apoptotic bodies: hypereosinophilic shrunken cytoplasm; around mitoses: a clear halo
    ring = (rho > 1.0) & (rho < 1.7)
    e_c = np.where(ring & nuc.apoptotic[oy, ox], 0.75, np.where(ring & nuc.mitosis[oy, ox], 0.22, e_c))
    if m.nucleoli > 0:
        off = 0.25 * style.cells.nuclear_radius_um
        ncx = grid.cx + off * (grid.rand(14) - 0.5) * 2
        ncy = grid.cy + off * (grid.rand(15) - 0.5) * 2
        dn = np.hypot(X - ncx[oy, ox], Y - ncy[oy, ox])
        spot = nuc.nucleolus[oy, ox] & (rho < 0.85) & (dn < m.nucleolus_um)
        h_nuc = np.where(spot, np.maximum(h_nuc, 1.35 * nuc.dark[oy, ox]), h_nuc)
        e_c = np.where(spot, e_c + 0.35, e_c)
    if arch.crush.max() > 0:  # smeared nuclear material (part of the tumour cells)
        c, si = np.cos(style.orientation), np.sin(style.orientation)
        streak = noise_points((X * c + Y * si) / 12.0, (Y * c - X * si) / 0.9, 1.0, s + 37)
        h_c = _blend(h_c, 0.2 + 0.75 * streak, arch.crush)
        e_c = _blend(e_c, 0.35, arch.crush)
        w = np.maximum(w, arch.crush)
    # shared materials between the cells: empty space, septa, lumina, vessels, necrosis
    h_m = np.full(X.shape, EMPTY_H, np.float32)
    e_m = np.full(X.shape, EMPTY_E, np.float32)
    if arch.stroma.max() > 0:
        hs, es = _stroma(m.stroma_kind, xs, ys, s + 50, style.orientation)
        h_m, e_m, w = _blend(h_m, hs, arch.stroma), _blend(e_m, es, arch.stroma), w * (1 - arch.stroma)
    if arch.cleft.max() > 0:  # retraction clefts: empty glass-like spaces
        w = w * (1 - arch.cleft)
    if arch.lumen.max() > 0:
        if m.rosette_kind == "lumen":
            hl, el = 0.02, 0.3 + 0.05 * noise_grid(xs, ys, 1.0, s + 55)
        else:  # Homer Wright: pink fibrillary neuropil
            hl, el = 0.05, 0.5 + 0.2 * noise_grid(xs, ys, 0.6, s + 55)
        h_m, e_m, w = _blend(h_m, hl, arch.lumen), _blend(e_m, el, arch.lumen), w * (1 - arch.lumen)
    vd = arch.vessel_d
    if np.isfinite(vd).any():
        lumen_v = vd < arch.vessel_r
        wall = (vd >= arch.vessel_r) & (vd < arch.vessel_r + 1.5)
        rbc = lumen_v & (noise_grid(xs, ys, 2.0, s + 56) > 0.45)
        e_m = np.where(wall, 0.9, np.where(rbc, 1.25, np.where(lumen_v, EMPTY_E, e_m)))
        h_m = np.where(wall, 0.12, np.where(lumen_v, EMPTY_H, h_m))
        w = np.where(wall | lumen_v, 0.0, w)
    if arch.necrosis.max() > 0:
        debris = (noise_grid(xs, ys, 0.9, s + 57) > 0.78) * 0.9 * noise_grid(xs, ys, 5.0, s + 58)
        e_n = 0.72 + 0.14 * noise_grid(xs, ys, 7.0, s + 59)
        h_m, e_m = _blend(h_m, 0.1 + debris, arch.necrosis), _blend(e_m, e_n, arch.necrosis)
        w = w * (1 - arch.necrosis)
    cover = np.maximum(arch.necrosis, arch.crush)
    h_nuc = h_nuc * (1 - cover)
    alpha = np.clip(prof * (1 - cover), 0, 1)
    f32 = np.float32
    return TumourLayers(h_c.astype(f32), e_c.astype(f32), h_m.astype(f32), e_m.astype(f32),
                        np.clip(w, 0, 1).astype(f32), h_nuc.astype(f32), alpha.astype(f32))
