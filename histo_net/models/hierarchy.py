"""A MIL head over subtypes whose top-level call is the sum of its subtypes' probabilities.

Training with ``target: subtype`` gives the MIL model one output per subtype (``names``);
each subtype belongs to one top-level class (``groups[k]`` indexes ``class_names``). The
top-level logits are the log-sum-exp of each class's subtype logits, so their softmax is
exactly the summed subtype probability and everything downstream (temperature,
threshold, band, the decision rule) works on the top-level question unchanged. The
subtype differential shown to a pathologist is consistent with the calibrated call:
``P(subtype) = P_calibrated(its class) * softmax(subtype logits within that class)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from histo_net.errors import ConfigError
from histo_net.taxonomy import TUMOUR_SUBTYPES


@dataclass(frozen=True)
class SubtypeHead:
    """Subtype names in MIL output order and the top-level class of each."""

    names: tuple[str, ...]
    groups: tuple[int, ...]  # (K,) index into class_names
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.groups) or len(set(self.names)) != len(self.names):
            raise ValueError("subtype names must be distinct, one group index each")
        if any(not 0 <= g < len(self.class_names) for g in self.groups):
            raise ValueError(f"subtype group indices {self.groups} outside {len(self.class_names)} classes")
        empty = [c for i, c in enumerate(self.class_names) if i not in self.groups]
        if empty:
            raise ValueError(f"class(es) without a subtype: {', '.join(empty)}")

    @property
    def group_index(self) -> np.ndarray:
        """(K,) int64 class index of each subtype."""
        return np.asarray(self.groups, dtype=np.int64)

    def top_logits(self, logits: np.ndarray) -> np.ndarray:
        """(..., K) subtype logits -> (..., C) top-level logits (log-sum-exp per class), float32."""
        z = np.asarray(logits, dtype=np.float64)
        out = np.empty(z.shape[:-1] + (len(self.class_names),), dtype=np.float64)
        for c in range(len(self.class_names)):
            part = z[..., self.group_index == c]  # (..., K_c)
            peak = part.max(axis=-1, keepdims=True)
            out[..., c] = (peak + np.log(np.exp(part - peak).sum(axis=-1, keepdims=True)))[..., 0]
        return out.astype(np.float32)

    def differential(self, logits: np.ndarray, top_probs: np.ndarray) -> np.ndarray:
        """(..., K) subtype logits and (..., C) calibrated class probabilities -> (..., K)
        subtype probabilities summing, within each class, to that class's probability."""
        z = np.asarray(logits, dtype=np.float64)
        p_top = np.asarray(top_probs, dtype=np.float64)
        within = np.empty_like(z)
        for c in range(len(self.class_names)):
            sel = self.group_index == c
            part = z[..., sel]
            e = np.exp(part - part.max(axis=-1, keepdims=True))
            within[..., sel] = e / e.sum(axis=-1, keepdims=True)
        return within * p_top[..., self.group_index]

    def best_in_class(self, subtype_probs: np.ndarray, class_index: int) -> int:
        """Index (into ``names``) of the most probable subtype of class ``class_index``."""
        p = np.where(self.group_index == int(class_index), np.asarray(subtype_probs, dtype=np.float64), -1.0)
        return int(np.argmax(p))

    def shown_subtype(self, logits: np.ndarray) -> int:
        """(K,) subtype logits -> the subtype whose attention a class-specific heatmap shows: the
        most probable subtype of the most probable class (as :func:`predict.model.decide_slide`)."""
        return self.best_in_class(self.differential(logits, _softmax(self.top_logits(logits))),
                                  int(np.argmax(self.top_logits(logits))))

    def index_of(self, subtype: str) -> int:
        """Output index of ``subtype``; ValueError when the head has no such subtype."""
        return self.names.index(subtype)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(np.asarray(z, dtype=np.float64) - np.max(z))
    return e / e.sum()


def _order_key(name: str) -> tuple[int, str]:
    """Taxonomy order first (net, nec, merkel, lymphoma, ewing, rms), then others by name."""
    return (TUMOUR_SUBTYPES.index(name), "") if name in TUMOUR_SUBTYPES else (len(TUMOUR_SUBTYPES), name)


def head_from_labels(pairs: Iterable[tuple[str, str, str]], class_names: list[str]) -> SubtypeHead:
    """The head for labelled slides ``(slide_id, label, subtype)``; ConfigError (one line)
    naming the slide when a subtype is missing or sits under two labels."""
    owner: dict[str, str] = {}
    for slide_id, label, subtype in pairs:
        if not subtype:
            raise ConfigError(f"slide {slide_id}: target=subtype needs a 'subtype' in the manifest "
                              "for every labelled slide")
        if owner.setdefault(subtype, label) != label:
            raise ConfigError(f"slide {slide_id}: subtype '{subtype}' is labelled both "
                              f"'{owner[subtype]}' and '{label}'")
    names = sorted(owner, key=lambda s: (class_names.index(owner[s]), *_order_key(s)))
    try:
        return SubtypeHead(names=tuple(names), groups=tuple(class_names.index(owner[s]) for s in names),
                           class_names=tuple(class_names))
    except ValueError as exc:
        raise ConfigError(f"target=subtype: {exc}") from None
