"""Calibrate ``subtypes.TONE``: an affine map of the tumour's stain concentrations so every
subtype has about the same per-channel RGB mean and standard deviation and grey-level
quantiles under the reference stain, averaged over slides with their own nuisance and
morphology draws; subtypes then differ by morphology, not colour statistics. Run
``python -m histo_net.synth.calibrate`` after changing a subtype and paste the printed
table into ``subtypes.py`` (it also prints each subtype's fine band-pass energy, which is
balanced by hand through the subtypes' structures).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.optimize import least_squares

from histo_net.synth.morphology import (
    IDENTITY_TONE,
    TumourLayers,
    TumourStyle,
    apply_tone,
    render_tumour,
)
from histo_net.synth.spec import PRESETS, SlideJob, build_spec
from histo_net.synth.stain import concentrations_to_rgb, reference_stain
from histo_net.synth.subtypes import Tone
from histo_net.taxonomy import TUMOUR_SUBTYPES

_GREY = np.array([0.299, 0.587, 0.114])


def _styles(subtype: str, n_slides: int) -> list[TumourStyle]:
    """Un-calibrated tumour styles of ``n_slides`` standard slides of ``subtype``."""
    out = []
    for k in range(n_slides):
        job = SlideJob("calibration", "P", subtype, 7000 + k, 4096, 4096, PRESETS["small"], 0.0, "svs")
        out.append(replace(build_spec(job).style, tone=IDENTITY_TONE))
    return out


def raw_layers(styles: list[TumourStyle], tiles_per_slide: int = 4, size_px: int = 128,
               mpp: float = 0.5) -> list[TumourLayers]:
    """Un-toned layers of tumour tiles of ``styles``."""
    out = []
    for k, style in enumerate(styles):
        rng = np.random.default_rng([k, 11])
        for _ in range(tiles_per_slide):
            x0, y0 = rng.uniform(200.0, 4000.0, 2)
            xs = x0 + (np.arange(size_px) + 0.5) * mpp
            ys = y0 + (np.arange(size_px) + 0.5) * mpp
            out.append(render_tumour(style, xs, ys, lambda x, y: np.ones(np.shape(x), bool)))
    return out


def _rgb(layers: list[TumourLayers], tone: Tone) -> list[np.ndarray]:
    stain = reference_stain()
    out = []
    for lay in layers:
        hb, eb, hn, alpha = apply_tone(lay, tone)
        h = np.maximum(hb, hn)
        e = eb * (1 - 0.35 * alpha)
        out.append(concentrations_to_rgb(h, e, stain).astype(np.float64))
    return out


def rgb_stats(layers: list[TumourLayers], tone: Tone) -> np.ndarray:
    """(13,) RGB mean and std and grey-level 5/15/30/50/70/85/95th percentiles after applying
    ``tone`` and compositing like the renderer."""
    flat = np.concatenate([t.reshape(-1, 3) for t in _rgb(layers, tone)])
    grey = flat @ _GREY
    return np.concatenate([flat.mean(0), flat.std(0), np.percentile(grey, [5, 15, 30, 50, 70, 85, 95])])


def fine_energy(layers: list[TumourLayers], tone: Tone) -> float:
    """Mean log energy of the grey difference-of-Gaussian bands sigma 0.7-1.4 and 1.4-2.8 px."""
    vals = []
    for rgb in _rgb(layers, tone):
        grey = gaussian_filter(rgb @ _GREY, 0.6)  # about the renderer's optical blur
        g1, g2, g3 = (gaussian_filter(grey, s) for s in (0.7, 1.4, 2.8))
        vals.append(np.log(np.mean((g1 - g2) ** 2)) + np.log(np.mean((g2 - g3) ** 2)))
    return float(np.mean(vals))


def _fit_tone(layers: list[TumourLayers], target: np.ndarray) -> Tone:
    def resid(t: np.ndarray) -> np.ndarray:
        d = rgb_stats(layers, (t[0], t[1], t[2], t[3])) - target
        return np.concatenate([d[:3] / 4.0, d[3:6] / 2.0, d[6:] / 6.0, 0.05 * (t - np.array(IDENTITY_TONE))])

    fit = least_squares(resid, np.array(IDENTITY_TONE), diff_step=1e-2,
                        bounds=([0.6, -0.3, 0.6, -0.3], [1.6, 0.3, 1.6, 0.3]))
    return tuple(round(float(v), 4) for v in fit.x)  # type: ignore[return-value]


def calibrate(n_slides: int = 8) -> dict[str, Tone]:
    """TONE: each subtype's tone fitted to the mean colour statistics over subtypes."""
    layers = {s: raw_layers(_styles(s, n_slides)) for s in TUMOUR_SUBTYPES}
    target = np.mean([rgb_stats(v, IDENTITY_TONE) for v in layers.values()], axis=0)
    return {s: _fit_tone(layers[s], target) for s in TUMOUR_SUBTYPES}


if __name__ == "__main__":
    tones = calibrate()
    print("TONE: dict[str, Tone] = {")
    for s in TUMOUR_SUBTYPES:
        print(f'    "{s}": {tones[s]},')
    print("}")
    for s in TUMOUR_SUBTYPES:
        lay = raw_layers(_styles(s, 8))
        print("#", s, np.round(rgb_stats(lay, tones[s]), 1), "fine energy", round(fine_energy(lay, tones[s]), 3))
