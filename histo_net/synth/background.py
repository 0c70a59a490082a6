"""Non-tumour tissue shared by every class: stroma, fibroblasts, lymphocytes, vessels,
fat and necrosis. Identical in distribution whatever the slide's label."""

from __future__ import annotations

import numpy as np

from histo_net.synth.cells import (
    CoarseGrid,
    ellipse_rho,
    make_grid,
    nearest_two,
    nucleus_profile,
    voronoi_points,
)
from histo_net.synth.chromatin import chromatin_texture
from histo_net.synth.morphology import PointTest
from histo_net.synth.noise import noise_grid, noise_points


def render_background(xs: np.ndarray, ys: np.ndarray, seed: int, fibre_angle: float,
                      fat: np.ndarray, necrosis: np.ndarray, lymph: np.ndarray,
                      allow_cells: PointTest, lymph_at: PointTest
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Stroma-based tissue on the grid ``ys x xs`` (um); returns (h, e) float32 (H, W).

    ``fat``, ``necrosis``, ``lymph`` are per-pixel weights in [0, 1]; ``allow_cells``
    tells which cell centres may carry stromal nuclei (not in tumour, in tissue);
    ``lymph_at`` gives the lymphocyte density at arbitrary points.
    """
    X, Y = np.meshgrid(xs, ys)
    c, s = np.cos(fibre_angle), np.sin(fibre_angle)
    along, across = X * c + Y * s, Y * c - X * s
    across = across + 25.0 * noise_grid(xs, ys, 120.0, seed + 1)
    fib = noise_points(along / 10.0, across / 1.3, 1.0, seed + 2)
    fib2 = noise_grid(xs, ys, 6.0, seed + 3)
    loose = noise_grid(xs, ys, 60.0, seed + 4)
    e = 0.12 + 0.5 * np.clip(0.6 * fib + 0.4 * fib2 - 0.35 * (loose - 0.5), 0, 1) ** 1.3
    h = np.full(X.shape, 0.03, np.float32) + 0.03 * fib2
    # vessels: rings with red blood cells in the lumen
    coarse = CoarseGrid(xs, ys)
    vd1 = coarse.up(voronoi_points(coarse.x, coarse.y, 220.0, seed + 5)[0])
    vr = 6.0 + 14.0 * noise_grid(xs, ys, 300.0, seed + 6)
    lumen = vd1 < vr
    wall = (vd1 >= vr) & (vd1 < vr + 3.5)
    rbc = lumen & (noise_grid(xs, ys, 2.2, seed + 7) > 0.5)
    e = np.where(wall, 0.95, np.where(rbc, 1.3, np.where(lumen, 0.06, e)))
    # fibroblasts (spindles along the fibres) and lymphocytes
    gf = make_grid(xs, ys, 14.0, 0.9, seed + 8)
    occ_f = allow_cells(gf.cx, gf.cy) & (gf.rand(1) < 0.35)
    af = np.full(gf.cx.shape, 5.5) * (1 + 0.15 * gf.normal(2))
    bf = np.full(gf.cx.shape, 1.2)
    tf = np.full(gf.cx.shape, fibre_angle) + 0.25 * gf.normal(3)
    rho_f, _, _ = ellipse_rho(gf, xs, ys, occ_f, af, bf, tf)
    h_nuc = 0.8 * nucleus_profile(rho_f)
    gl = make_grid(xs, ys, 7.0, 0.9, seed + 9)
    occ_l = allow_cells(gl.cx, gl.cy) & (gl.rand(1) < lymph_at(gl.cx, gl.cy))
    al = np.full(gl.cx.shape, 2.6) * (1 + 0.05 * gl.normal(2))
    rho_l, _, _ = ellipse_rho(gl, xs, ys, occ_l, al, al * 0.95, gl.rand(3) * np.pi)
    h_nuc = np.maximum(h_nuc, 1.15 * nucleus_profile(rho_l) * chromatin_texture("coarse_clumped", xs, ys, seed + 10, 0.6))
    prof_any = np.clip(np.maximum(nucleus_profile(rho_f), nucleus_profile(rho_l)), 0, 1)
    h = np.maximum(h, h_nuc)
    e = e * (1 - 0.4 * prof_any)
    # lymphoid aggregates: denser pale-blue background
    e = e * (1 - 0.3 * lymph)
    # fat: large empty vacuoles with thin membranes
    if fat.any():
        fd1, fd2, _, _ = nearest_two(make_grid(xs, ys, 55.0, 0.8, seed + 11), xs, ys)
        membrane = np.clip(1.0 - (fd2 - fd1) / 1.6, 0, 1)
        e = e * (1 - fat) + fat * (0.02 + 0.6 * membrane)
        h = h * (1 - fat) + fat * 0.01
    # necrosis: homogeneous pink with karyorrhectic debris
    if necrosis.any():
        debris = (noise_grid(xs, ys, 0.9, seed + 12) > 0.8) * 0.9 * noise_grid(xs, ys, 6.0, seed + 13)
        e_n = 0.75 + 0.15 * noise_grid(xs, ys, 8.0, seed + 14)
        e = e * (1 - necrosis) + necrosis * e_n
        h = h * (1 - necrosis) + necrosis * (0.12 + debris)
    return h.astype(np.float32), e.astype(np.float32)
