"""Cached embeddings -> whole-bag MIL predictions of a set of slides (training and evaluate).

Also the training target: the top-level label (default) or, with ``target: subtype``, the
manifest's subtype, whose MIL logits are folded into top-level logits by the
:class:`~histo_net.models.hierarchy.SubtypeHead` before anything is calibrated or decided.
"""

from __future__ import annotations

import numpy as np
import torch

from histo_net.errors import ConfigError
from histo_net.features.embed import SlideEmbedding
from histo_net.features.ood import DomainCheck, DomainReference, check_slide, tile_area_mm2
from histo_net.features.store import FeaturesKey, read_features_attrs, read_features_h5
from histo_net.models.hierarchy import SubtypeHead, head_from_labels
from histo_net.models.mil import attention_for_class
from histo_net.train.context import RunContext
from histo_net.train.evaluation import EvalSet
from histo_net.train.mil import predict_bags
from histo_net.train.stages import features_path
from histo_net.wsi.inputs import SlideSpec


def load_embeddings(ctx: RunContext, enc_hash: str) -> dict[str, SlideEmbedding]:
    """Every slide's features h5 (must match ``enc_hash``); ConfigError naming a missing one."""
    out: dict[str, SlideEmbedding] = {}
    for slide in ctx.manifest.slides:
        path = features_path(ctx, slide.slide_id)
        key = FeaturesKey.for_tiles(enc_hash, ctx.tiles[slide.slide_id].tiles)
        if not (path.is_file() and key.matches(read_features_attrs(path))):
            raise ConfigError(f"{path}: missing or from another encoder; run --stage features first")
        out[slide.slide_id], _, _ = read_features_h5(path)
    return out


def slide_area(ctx: RunContext) -> float:
    """Tissue area (mm^2) one tile of this run's grid stands for."""
    return tile_area_mm2(ctx.cfg.tiling.stride, ctx.cfg.tiling.target_mpp)


def slide_checks(ctx: RunContext, slides: list[SlideSpec], embs: dict[str, SlideEmbedding],
                 reference: DomainReference | None) -> list[list[DomainCheck]]:
    """Per slide, every check of ``reference`` (the same step as prediction)."""
    return [check_slide(reference, embs[s.slide_id].features, embs[s.slide_id].tile_probs,
                        embs[s.slide_id].qc, tile_class_names=ctx.tile_class_names,
                        tile_area=slide_area(ctx))[1] for s in slides]


def subtype_of(slide: SlideSpec) -> str:
    """The manifest's ``subtype`` of a slide ("" when none)."""
    return str(slide.extra.get("subtype", "") or "")


def target_head(ctx: RunContext) -> SubtypeHead | None:
    """The subtype head of a ``target: subtype`` run (None for ``target: label``), from the
    labelled slides of the manifest; ConfigError naming a slide without a usable subtype."""
    if ctx.cfg.target != "subtype":
        return None
    labelled = [s for s in ctx.manifest.slides if s.label]
    return head_from_labels(((s.slide_id, str(s.label), subtype_of(s)) for s in labelled), ctx.class_names)


def mil_targets(ctx: RunContext, slides: list[SlideSpec], head: SubtypeHead | None) -> list[int]:
    """The MIL training labels of ``slides``: class index, or subtype index with a head."""
    if head is None:
        return [ctx.class_names.index(str(s.label)) for s in slides]
    return [head.index_of(subtype_of(s)) for s in slides]


def eval_set(ctx: RunContext, slides: list[SlideSpec], embs: dict[str, SlideEmbedding],
             mil: torch.nn.Module, reference: DomainReference | None = None,
             head: SubtypeHead | None = None) -> EvalSet:
    """Whole-bag MIL predictions, tile outputs and slide checks of ``slides`` (with >= 1 tile).

    With a subtype ``head`` the MIL logits ``(S,K)`` are kept as ``subtype_logits`` and
    folded into top-level ``logits`` ``(S,C)``.
    """
    slides = [s for s in slides if len(embs[s.slide_id].features)]
    bags = [torch.from_numpy(embs[s.slide_id].features) for s in slides]
    logits, attention = predict_bags(mil, bags, device=ctx.device)
    # class-specific MIL: the attention row prediction shows (a subtype head: the best subtype
    # of the most probable class)
    attention = [attention_for_class(a, head.shown_subtype(lg) if head is not None else int(np.argmax(lg)))
                 for a, lg in zip(attention, logits)]
    fine = None
    if head is not None:
        fine, logits = logits, head.top_logits(logits)
    names = ctx.class_names
    return EvalSet(
        slide_ids=[s.slide_id for s in slides],
        labels=np.asarray([names.index(str(s.label)) for s in slides], dtype=np.int64),
        logits=logits, attention=attention,
        tile_probs=[embs[s.slide_id].tile_probs for s in slides],
        tile_labels=[ctx.tiles[s.slide_id].labels if ctx.tiles[s.slide_id].in_tumour is not None else None
                     for s in slides],
        in_tumour=[ctx.tiles[s.slide_id].in_tumour for s in slides],
        checks=slide_checks(ctx, slides, embs, reference) if reference is not None else None,
        subtypes=[subtype_of(s) for s in slides], subtype_logits=fine, subtype_head=head)
