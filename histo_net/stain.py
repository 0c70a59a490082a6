"""H&E stain arithmetic shared by QC and augmentation: optical density and Ruifrok deconvolution.

Ruifrok & Johnston (2001) stain vectors, as in ``skimage.color.rgb2hed``: rows are the
H, E and DAB optical densities in RGB. Natural-log optical density, white = 0.
"""

from __future__ import annotations

import numpy as np
import torch

#: (3,3) rows H, E, DAB: optical density per RGB channel (not normalised)
RGB_FROM_HED: np.ndarray = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
_OD_EPS = 1e-6


def rgb_to_hed(rgb: np.ndarray) -> np.ndarray:
    """``(H,W,3)`` uint8 RGB -> ``(H,W,3)`` float64 HED stain concentrations.

    Not clipped at 0 (unlike skimage), so ``hed_to_rgb(rgb_to_hed(x)) == x`` up to rounding.
    """
    hed_from_rgb = np.linalg.inv(RGB_FROM_HED)
    rgb01 = np.maximum(rgb.astype(np.float64) / 255.0, _OD_EPS)
    od = -np.log(rgb01)  # (H,W,3) optical density, white = 0
    return od @ hed_from_rgb


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """``(H,W,3)`` float HED concentrations -> ``(H,W,3)`` uint8 RGB."""
    od = hed @ RGB_FROM_HED
    return np.clip(np.rint(np.exp(-od) * 255.0), 0, 255).astype(np.uint8)


def hed_from_od_matrix(device: torch.device) -> torch.Tensor:
    """(3,3) float32 matrix M with unit-norm stain rows: ``od_row @ M -> hed_row`` on ``device``."""
    rgb_from_hed = torch.tensor(RGB_FROM_HED, dtype=torch.float32, device=device)
    rgb_from_hed = rgb_from_hed / rgb_from_hed.norm(dim=1, keepdim=True)
    return torch.linalg.inv(rgb_from_hed)


# ----------------------------------------------------------------- normalisation (torch, batched)
#: stain normalisation methods :func:`normalise_stain` knows ("none" leaves tiles as they are)
STAIN_NORMALIZATIONS: tuple[str, ...] = ("none", "macenko", "reinhard")
#: Macenko et al. (2009) reference H and E optical-density vectors (columns) and the 99th
#: percentile concentrations, the constants most implementations use
MACENKO_HE_REF: tuple[tuple[float, float], ...] = ((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581))
MACENKO_MAX_C_REF: tuple[float, float] = (1.9705, 1.0308)
#: Reinhard target: CIELAB mean and standard deviation of the tissue pixels of a real H&E
#: crop (TIAToolbox's stain-normalisation target image, measured once)
REINHARD_LAB_MEAN: tuple[float, float, float] = (50.50, 31.34, -13.70)
REINHARD_LAB_STD: tuple[float, float, float] = (15.59, 6.73, 6.49)
_BETA = 0.15          # OD below this (any channel) is glass, as in Macenko
_MIN_TISSUE = 0.05    # tiles with less tissue than this share are left unchanged
_SRGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750),
                (0.0193339, 0.1191920, 0.9503041))
_WHITE_D65 = (0.95047, 1.0, 1.08883)


def _tissue_weights(od: torch.Tensor) -> torch.Tensor:
    """(B,3,P) OD -> (B,P) float 1 where every channel's OD exceeds the glass floor."""
    return (od > _BETA).all(dim=1).float()


def _masked_quantile(values: torch.Tensor, weight: torch.Tensor, q: float) -> torch.Tensor:
    """(B,P) values, (B,P) 0/1 weights -> (B,) ``q`` quantile over weighted entries."""
    filled = torch.where(weight > 0, values, torch.full_like(values, float("nan")))
    return torch.nanquantile(filled, q, dim=1)


def macenko_normalise(x: torch.Tensor) -> torch.Tensor:
    """Per-tile Macenko normalisation to the reference H&E stain.

    Args:
        x: (B,3,H,W) uint8 or float 0-255 RGB.
    Returns:
        (B,3,H,W) float32 0-255. Per tile: OD of tissue pixels -> plane of the two largest
        eigenvectors -> robust extreme angles (1st/99th percentiles) -> H and E vectors ->
        concentrations scaled to the reference 99th percentiles -> reference stain. Tiles
        with under 5% tissue or a degenerate estimate are returned unchanged.
    """
    rgb = x.float()
    b, _, h, w = rgb.shape
    od = -torch.log((rgb.reshape(b, 3, -1) + 1.0) / 256.0)  # (B,3,P)
    step = max(1, min(h, w) // 64)  # statistics on at most ~64x64 pixels per tile
    od_s = -torch.log((rgb[:, :, ::step, ::step].reshape(b, 3, -1) + 1.0) / 256.0)  # (B,3,p)
    weight = _tissue_weights(od_s)  # (B,p)
    count = weight.sum(dim=1)  # (B,)
    ok = count >= _MIN_TISSUE * od_s.shape[2]
    wsum = count.clamp(min=1.0)[:, None, None]
    mean = (od_s * weight[:, None]).sum(dim=2, keepdim=True) / wsum  # (B,3,1)
    centred = (od_s - mean) * weight[:, None]
    cov = centred @ centred.transpose(1, 2) / wsum  # (B,3,3)
    _, vecs = torch.linalg.eigh(cov.double() + 1e-9 * torch.eye(3, dtype=torch.float64, device=x.device))
    plane = vecs[:, :, 1:].float()  # (B,3,2) two largest
    plane = plane * torch.where(plane.sum(dim=1, keepdim=True) < 0, -1.0, 1.0)  # point into +OD
    proj = plane.transpose(1, 2) @ od_s  # (B,2,p)
    phi = torch.atan2(proj[:, 1], proj[:, 0])  # (B,p)
    lo, hi = _masked_quantile(phi, weight, 0.01), _masked_quantile(phi, weight, 0.99)
    v1 = (plane @ torch.stack([torch.cos(lo), torch.sin(lo)], dim=1)[:, :, None])[:, :, 0]  # (B,3)
    v2 = (plane @ torch.stack([torch.cos(hi), torch.sin(hi)], dim=1)[:, :, None])[:, :, 0]
    h_first = (v1[:, 0] > v2[:, 0])[:, None]
    he = torch.stack([torch.where(h_first, v1, v2), torch.where(h_first, v2, v1)], dim=2)  # (B,3,2)
    ref = torch.tensor(MACENKO_HE_REF, dtype=torch.float32, device=x.device)  # (3,2)
    ref_max = torch.tensor(MACENKO_MAX_C_REF, dtype=torch.float32, device=x.device)
    ok = ok & torch.isfinite(he).flatten(1).all(dim=1)
    he = torch.where(ok[:, None, None], he, ref.expand_as(he))
    pinv = torch.linalg.pinv(he)  # (B,2,3)
    conc_s = pinv @ od_s  # (B,2,p)
    max_c = torch.stack([_masked_quantile(conc_s[:, i], weight, 0.99) for i in range(2)], dim=1)  # (B,2)
    conc = pinv @ od  # (B,2,P)
    ok = ok & torch.isfinite(max_c).all(dim=1) & (max_c > 1e-3).all(dim=1)
    scale = torch.where(ok[:, None], ref_max / max_c.clamp(min=1e-3), torch.ones_like(max_c))
    out = 256.0 * torch.exp(-(ref @ (conc * scale[:, :, None]))) - 1.0  # (B,3,P)
    out = torch.where(ok[:, None, None], out, rgb.reshape(b, 3, -1))
    return torch.nan_to_num(out, nan=255.0).clamp(0, 255).reshape(b, 3, h, w)


def _f_lab(t: torch.Tensor) -> torch.Tensor:
    d = 6.0 / 29.0
    return torch.where(t > d**3, t.clamp(min=1e-12) ** (1.0 / 3.0), t / (3 * d * d) + 4.0 / 29.0)


def _f_lab_inv(t: torch.Tensor) -> torch.Tensor:
    d = 6.0 / 29.0
    return torch.where(t > d, t**3, 3 * d * d * (t - 4.0 / 29.0))


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(B,3,P) float 0-255 sRGB -> (B,3,P) CIELAB (D65)."""
    c = rgb / 255.0
    lin = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = torch.tensor(_SRGB_TO_XYZ, dtype=rgb.dtype, device=rgb.device)
    white = torch.tensor(_WHITE_D65, dtype=rgb.dtype, device=rgb.device)[None, :, None]
    f = _f_lab((m @ lin) / white)  # (B,3,P)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_lab`: (B,3,P) CIELAB -> (B,3,P) float 0-255 sRGB (clipped)."""
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], dim=1)
    white = torch.tensor(_WHITE_D65, dtype=lab.dtype, device=lab.device)[None, :, None]
    m_inv = torch.linalg.inv(torch.tensor(_SRGB_TO_XYZ, dtype=lab.dtype, device=lab.device))
    lin = (m_inv @ (_f_lab_inv(f) * white)).clamp(0, 1)
    srgb = torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin.clamp(min=1e-12) ** (1 / 2.4) - 0.055)
    return (srgb * 255.0).clamp(0, 255)


def reinhard_normalise(x: torch.Tensor) -> torch.Tensor:
    """Per-tile Reinhard normalisation: CIELAB mean/std of tissue pixels -> the reference's.

    (B,3,H,W) uint8/float 0-255 -> (B,3,H,W) float32 0-255; tiles with under 5% tissue are
    returned unchanged.
    """
    rgb = x.float()
    b, _, h, w = rgb.shape
    flat = rgb.reshape(b, 3, -1)
    step = max(1, min(h, w) // 64)  # statistics on at most ~64x64 pixels per tile
    sub = rgb[:, :, ::step, ::step].reshape(b, 3, -1)
    weight = (-torch.log((sub + 1.0) / 256.0)).sum(dim=1).gt(2 * _BETA).float()  # (B,p) not glass
    count = weight.sum(dim=1).clamp(min=1.0)[:, None]  # (B,1)
    lab_s = rgb_to_lab(sub)
    mean = (lab_s * weight[:, None]).sum(dim=2) / count  # (B,3)
    std = (((lab_s - mean[:, :, None]) ** 2 * weight[:, None]).sum(dim=2) / count).sqrt()  # (B,3)
    lab = rgb_to_lab(flat)
    t_mean = torch.tensor(REINHARD_LAB_MEAN, device=x.device)[None, :, None]
    t_std = torch.tensor(REINHARD_LAB_STD, device=x.device)[None, :, None]
    out = lab_to_rgb((lab - mean[:, :, None]) / std.clamp(min=1e-3)[:, :, None] * t_std + t_mean)
    ok = (weight.mean(dim=1) >= _MIN_TISSUE)[:, None, None]
    return torch.where(ok, out, flat).reshape(b, 3, h, w)


def normalise_stain(x: torch.Tensor, method: str) -> torch.Tensor:
    """(B,3,H,W) 0-255 tiles normalised with ``method`` (see ``STAIN_NORMALIZATIONS``); float32."""
    if method == "none":
        return x.float()
    if method == "macenko":
        return macenko_normalise(x)
    if method == "reinhard":
        return reinhard_normalise(x)
    raise ValueError(f"unknown stain normalisation {method!r}; expected one of {STAIN_NORMALIZATIONS}")
