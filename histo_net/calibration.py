"""Calibration kernels: temperature, threshold, indeterminate band, and one-sided limits.

Everything here is fitted on held-out predictions (out-of-fold or validation) and refuses to
pretend: a small calibration set gives soft probabilities and a wide band, with warnings,
never a temperature silently at its clamp.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from scipy import stats

logger = logging.getLogger(__name__)

#: the temperature is searched in [T_MIN, T_MAX]; landing on either bound is reported
T_MIN, T_MAX = 0.05, 20.0


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature, the label smoothing it used and whether it hit a search bound."""

    temperature: float
    smoothing: float
    at_bound: bool


def succession_smoothing(n: int, num_classes: int) -> float:
    """Label smoothing so the true-class target is the rule of succession ``(n+1)/(n+2)``.

    With ``n`` calibration slides, all right, the best estimate of accuracy is (n+1)/(n+2);
    targets ``(1-e)*onehot + e/C`` with ``e = C/((C-1)(n+2))`` keep the fitted confidence there.
    """
    if n <= 0 or num_classes < 2:
        return 0.0
    return float(min(1.0, num_classes / ((num_classes - 1) * (n + 2))))


def fit_temperature_detailed(logits: npt.ArrayLike, labels: npt.ArrayLike, *,
                             smoothing: float | None = None, max_iter: int = 200) -> TemperatureFit:
    """Temperature ``T`` minimising the (label-smoothed) NLL of ``softmax(logits / T)``.

    ``logits`` (N,C) float, ``labels`` (N,) int. ``smoothing`` None = :func:`succession_smoothing`
    (separable data then has a finite optimum instead of T -> 0). LBFGS on ``log T``; the
    result lies in [T_MIN, T_MAX] and ``at_bound`` says when the optimum is at a bound.
    """
    logits_t = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if logits_t.numel() == 0 or logits_t.ndim != 2:
        return TemperatureFit(1.0, 0.0, False)
    n, c = logits_t.shape
    eps = succession_smoothing(n, c) if smoothing is None else float(smoothing)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")
    lo, hi = math.log(T_MIN), math.log(T_MAX)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        z = logits_t / log_t.clamp(lo, hi).exp()
        loss = torch.nn.functional.cross_entropy(z, labels_t, label_smoothing=eps)
        loss.backward()
        return loss

    optimizer.step(closure)
    value = float(log_t.detach())
    if not math.isfinite(value):
        logger.warning("temperature fit diverged; using T=1")
        return TemperatureFit(1.0, eps, True)
    at_bound = value <= lo + 1e-3 or value >= hi - 1e-3
    return TemperatureFit(float(math.exp(min(max(value, lo), hi))), eps, at_bound)


def fit_temperature(logits: npt.ArrayLike, labels: npt.ArrayLike, *, max_iter: int = 200,
                    smoothing: float | None = None) -> float:
    """:func:`fit_temperature_detailed`'s temperature alone (1.0 for empty input)."""
    return fit_temperature_detailed(logits, labels, smoothing=smoothing, max_iter=max_iter).temperature


def calibrated_probs(logits: npt.ArrayLike, temperature: float) -> np.ndarray:
    """``softmax(logits / T)`` as float64 ``(N,C)`` (or ``(C,)`` for one slide)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def choose_threshold(pos_probs: npt.ArrayLike, labels01: npt.ArrayLike) -> float:
    """Threshold on the positive-class probability maximising Youden's J (= balanced accuracy).

    Predict positive when ``p >= threshold``. Candidates are midpoints between
    sorted distinct probabilities; ties keep the one closest to 0.5. Returns 0.5
    when only one class is present.
    """
    p = np.asarray(pos_probs, dtype=np.float64).ravel()
    y = np.asarray(labels01).astype(bool).ravel()
    if y.all() or (~y).all() or p.size == 0:
        return 0.5
    values = np.unique(p)
    candidates = (np.concatenate([[0.5], (values[:-1] + values[1:]) / 2.0]) if values.size > 1
                  else np.array([0.5]))
    best_t, best_j = 0.5, -np.inf
    for t in candidates:
        pred = p >= t
        j = pred[y].mean() + (~pred[~y]).mean() - 1.0
        if j > best_j + 1e-12 or (abs(j - best_j) <= 1e-12 and abs(t - 0.5) < abs(best_t - 0.5)):
            best_t, best_j = float(t), float(j)
    return best_t


def _logit(p: npt.ArrayLike) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: float) -> float:
    return float(1.0 / (1.0 + math.exp(-z)))


@dataclass(frozen=True)
class BandFit:
    """An indeterminate band and the selective risk it reaches on the calibration slides.

    ``error_estimate`` is (errors + 1) / (calls + 2) among confident calls (None when the
    target cannot be reached: then the band is the wide fallback); ``coverage`` the share of
    calibration slides called confidently.
    """

    band: tuple[float, float]
    error_estimate: float | None
    coverage: float
    reached: bool


def wide_band(n: int, threshold: float) -> tuple[float, float]:
    """Fallback band ``[1/(n+2), (n+1)/(n+2)]`` (containing the threshold and 0.5)."""
    lo, hi = 1.0 / (n + 2), (n + 1.0) / (n + 2)
    return min(lo, threshold, 0.5), max(hi, threshold, 0.5)


def choose_indeterminate_band(pos_probs: npt.ArrayLike, labels01: npt.ArrayLike, threshold: float, *,
                              target_error: float = 0.05) -> BandFit:
    """The narrowest band around ``threshold`` whose confident calls reach ``target_error``.

    Selective prediction: slides are ranked by their logit distance from the threshold;
    the band is ``sigmoid(logit(t) +/- kappa)`` for the smallest ``kappa`` at which the
    error among calls outside it, estimated as (errors + 1) / (calls + 2) (a small set
    cannot certify a low error), is at most ``target_error``. The band always contains the
    threshold and 0.5. When no ``kappa`` reaches the target, the band is
    :func:`wide_band` and ``reached`` is False.
    """
    p = np.asarray(pos_probs, dtype=np.float64).ravel()
    y = np.asarray(labels01).astype(bool).ravel()
    n = int(p.size)
    t = float(threshold)
    if n == 0:
        return BandFit(wide_band(0, t), None, 0.0, False)
    margin = np.abs(_logit(p) - _logit(t))
    wrong = (p >= t) != y
    for kappa in np.concatenate([[0.0], np.unique(margin)]):
        called = margin > kappa
        calls = int(called.sum())
        if calls == 0:
            break
        estimate = (int(wrong[called].sum()) + 1.0) / (calls + 2.0)
        if estimate <= target_error:
            zt = float(_logit(t))
            band = (min(_sigmoid(zt - kappa), t, 0.5), max(_sigmoid(zt + kappa), t, 0.5))
            inside = (p >= band[0]) & (p <= band[1])
            return BandFit(band, estimate, float(1.0 - inside.mean()), True)
    band = wide_band(n, t)
    inside = (p >= band[0]) & (p <= band[1])
    return BandFit(band, None, float(1.0 - inside.mean()), False)


@dataclass
class CalibrationFit:
    """Temperature, threshold and band with the evidence they rest on (stored in the bundle)."""

    temperature: float
    threshold: float
    band: tuple[float, float]
    method: str                      # cross_fit | validation | training (no validation slides)
    n_slides: int
    n_per_class: dict[str, int]
    smoothing: float
    temperature_at_bound: bool
    target_error: float
    error_estimate: float | None
    coverage: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the weights-only bundle."""
        data = asdict(self)
        data["band"] = [float(v) for v in self.band]
        return data


def fit_calibration(logits: npt.ArrayLike, labels: npt.ArrayLike, *, class_names: list[str],
                    positive_index: int, method: str, target_error: float = 0.05,
                    fixed_threshold: float | None = None, fit_temperature_: bool = True,
                    min_per_class: int = 10, min_temperature: float = 0.0) -> CalibrationFit:
    """Fit T, threshold and band on held-out ``logits`` (S,C) with ``labels`` (S,) int.

    Warnings (returned and logged) when a class has fewer than ``min_per_class`` slides,
    when the temperature lands on a bound, or when the band cannot reach ``target_error``.
    ``min_temperature``: a fitted T below it is raised to it (warned); cross-fitting uses 1,
    since the deployed model is sharper than the fold models whose logits T was fitted on.
    """
    logits = np.asarray(logits, dtype=np.float64).reshape(-1, len(class_names))
    labels = np.asarray(labels, dtype=np.int64).ravel()
    n = len(labels)
    counts = {name: int((labels == i).sum()) for i, name in enumerate(class_names)}
    warnings: list[str] = []
    small = [f"{name}: {k}" for name, k in counts.items() if k < min_per_class]
    if small:
        warnings.append(f"calibration rests on {n} slides ({', '.join(small)} < {min_per_class} "
                        "per class): probabilities are softened and the indeterminate band is wide")
    two_classes = sum(1 for k in counts.values() if k > 0) >= 2
    tfit = (fit_temperature_detailed(logits, labels) if fit_temperature_ and two_classes
            else TemperatureFit(1.0, 0.0, False))
    if tfit.at_bound:
        warnings.append(f"temperature {tfit.temperature:.3g} is at its search bound "
                        f"[{T_MIN}, {T_MAX}]; calibration is unreliable")
    if tfit.temperature < min_temperature:
        warnings.append(f"fitted temperature {tfit.temperature:.3g} would sharpen the model; raised to "
                        f"{min_temperature:g} ({method} calibration may soften, never sharpen)")
        tfit = TemperatureFit(float(min_temperature), tfit.smoothing, False)
    probs = calibrated_probs(logits, tfit.temperature) if n else np.zeros((0, len(class_names)))
    if len(class_names) != 2:
        top = probs.max(axis=1) if n else np.zeros(0)
        hi = float(np.quantile(top, 0.5)) if n else 1.0
        return CalibrationFit(tfit.temperature, 0.5, (0.0, hi), method, n, counts, tfit.smoothing,
                              tfit.at_bound, target_error, None, 0.0, warnings)
    p = probs[:, positive_index] if n else np.zeros(0)
    y01 = (labels == positive_index).astype(int)
    threshold = float(fixed_threshold) if fixed_threshold is not None else choose_threshold(p, y01)
    bfit = choose_indeterminate_band(p, y01, threshold, target_error=target_error)
    if not bfit.reached:
        warnings.append(f"{n} calibration slides cannot show an error rate <= {target_error:.0%} "
                        f"among confident calls; wide indeterminate band "
                        f"[{bfit.band[0]:.3f}, {bfit.band[1]:.3f}]")
    for text in warnings:
        logger.warning("CALIBRATION WARNING: %s", text)
    return CalibrationFit(tfit.temperature, threshold, bfit.band, method, n, counts, tfit.smoothing,
                          tfit.at_bound, target_error, bfit.error_estimate, bfit.coverage, warnings)


@dataclass(frozen=True)
class Limit:
    """A one-sided limit fitted on a reference distribution.

    ``kind`` "max": values above ``limit`` fail; "min": values below fail. ``transform``
    ("log", "logit", "none") is the scale the normal prediction bound was computed on.
    """

    limit: float
    kind: str
    transform: str
    n: int
    alpha: float

    def passes(self, value: float | None) -> bool:
        """True when ``value`` is inside the limit (or missing/NaN: nothing to judge)."""
        if value is None or not math.isfinite(value):
            return True
        return value <= self.limit if self.kind == "max" else value >= self.limit

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (bundle)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limit:
        """Inverse of :meth:`to_dict`."""
        return cls(float(data["limit"]), str(data["kind"]), str(data["transform"]), int(data["n"]),
                   float(data["alpha"]))


_FORWARD = {"log": lambda v: np.log(np.maximum(v, 1e-12)), "logit": _logit, "none": lambda v: v}
_INVERSE = {"log": math.exp, "logit": _sigmoid, "none": float}


def prediction_limit(values: npt.ArrayLike, *, alpha: float, kind: str, transform: str = "none",
                     min_scale: float = 0.0) -> Limit:
    """One-sided normal prediction bound: a new reference-like value fails with probability alpha.

    On the ``transform`` scale: ``mean +/- t(1-alpha, n-1) * s * sqrt(1 + 1/n)`` with ``s`` the
    larger of the standard deviation and 1.4826 x MAD (and ``min_scale``). Needs n >= 2
    finite values; with fewer the limit is +/-inf (nothing fails) at n recorded.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    if kind not in ("min", "max"):
        raise ValueError(f"kind must be 'min' or 'max', got {kind!r}")
    if n < 2:
        return Limit(-math.inf if kind == "min" else math.inf, kind, transform, n, alpha)
    z = _FORWARD[transform](v)
    centre = float(np.mean(z))
    scale = max(float(np.std(z, ddof=1)), 1.4826 * float(np.median(np.abs(z - np.median(z)))),
                float(min_scale))
    width = float(stats.t.ppf(1.0 - alpha, n - 1)) * scale * math.sqrt(1.0 + 1.0 / n)
    bound = centre + width if kind == "max" else centre - width
    return Limit(float(_INVERSE[transform](bound)), kind, transform, n, float(alpha))
