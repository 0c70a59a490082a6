"""Calibrate ``morphology.PATTERN_TONE`` so every tumour pattern has the same per-channel
RGB mean and standard deviation under the reference stain: the classes then differ by
architecture and texture, not by colour statistics. Run
``python -m histo_net.synth.calibrate`` after changing a pattern and paste the printed
table into ``morphology.py``."""

from __future__ import annotations

import numpy as np

from histo_net.synth.morphology import ALL_PATTERNS, TumourStyle, render_tumour
from histo_net.synth.stain import concentrations_to_rgb, reference_stain

Tone = tuple[float, float, float, float]
_IDENTITY: Tone = (1.0, 0.0, 1.0, 0.0)


def raw_layers(pattern: str, n_tiles: int = 8, size_px: int = 224, mpp: float = 0.5
               ) -> list[tuple[np.ndarray, ...]]:
    """Un-toned (h_bg, e_bg, h_nuc, alpha) of ``n_tiles`` tumour tiles of ``pattern``."""
    from histo_net.synth import morphology

    saved = morphology.PATTERN_TONE[pattern]
    morphology.PATTERN_TONE[pattern] = _IDENTITY
    try:
        out = []
        for k in range(n_tiles):
            xs = (np.arange(size_px) + 0.5) * mpp + 500.0 + 300.0 * k
            ys = (np.arange(size_px) + 0.5) * mpp + 400.0 + 150.0 * k
            style = TumourStyle(pattern, 50 + k, orientation=0.4 * k)
            out.append(render_tumour(style, xs, ys, lambda x, y: np.ones(np.shape(x), bool)))
    finally:
        morphology.PATTERN_TONE[pattern] = saved
    return out


def rgb_stats(layers: list[tuple[np.ndarray, ...]], tone: Tone) -> np.ndarray:
    """(6,) RGB mean and std after applying ``tone`` and compositing like the renderer."""
    hs, ho, es, eo = tone
    stain = reference_stain()
    pix = []
    for hb, eb, hn, alpha in layers:
        h = np.maximum(np.maximum(hb * hs + ho, 0), hn * hs + ho * alpha)
        e = np.maximum(eb * es + eo, 0) * (1 - 0.35 * alpha)
        pix.append(concentrations_to_rgb(h, e, stain).reshape(-1, 3).astype(np.float64))
    flat = np.concatenate(pix)
    return np.concatenate([flat.mean(0), flat.std(0)])


def calibrated_tone(reference: str = "nested") -> dict[str, Tone]:
    """Tone maps matching every pattern's RGB statistics to ``reference`` at identity tone."""
    from scipy.optimize import least_squares

    target = rgb_stats(raw_layers(reference), _IDENTITY)
    out: dict[str, Tone] = {}
    for p in ALL_PATTERNS:
        layers = raw_layers(p)

        def resid(t: np.ndarray, layers: list[tuple[np.ndarray, ...]] = layers) -> np.ndarray:
            d = rgb_stats(layers, (t[0], t[1], t[2], t[3])) - target
            return np.concatenate([d[:3] / 4.0, d[3:] / 2.0, 0.05 * (t - np.array(_IDENTITY))])

        fit = least_squares(resid, np.array(_IDENTITY), diff_step=1e-2,
                            bounds=([0.3, -0.6, 0.3, -0.6], [2.5, 0.6, 2.5, 0.6]))
        out[p] = tuple(round(float(v), 4) for v in fit.x)  # type: ignore[assignment]
    return out


if __name__ == "__main__":
    tones = calibrated_tone()
    for p in ALL_PATTERNS:
        print(p, tones[p], np.round(rgb_stats(raw_layers(p), tones[p]), 1))
