"""``histo-net predict``: slides, folders or manifests in; one report folder per slide out."""

from __future__ import annotations

import argparse

from histo_net.cli.common import (
    add_config_options,
    add_device_options,
    add_progress_option,
    add_shard_option,
    add_slide_inputs,
    add_slide_timeout_option,
    flag_overrides,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare predict's options."""
    add_slide_inputs(parser)
    parser.add_argument("--model", required=True, help="model bundle (model.pt) from histo-net train")
    parser.add_argument("--encoder-weights", default=None, metavar="PATH",
                        help="weights file of the bundle's pretrained encoder (default: the path "
                        "recorded at training time); refused unless its sha256 matches")
    add_device_options(parser)
    add_config_options(parser, "default: configs/predict.yaml settings built in",
                       example="gallery_top_k=12")
    add_slide_timeout_option(parser)
    add_shard_option(parser)
    add_progress_option(parser)


def run(args: argparse.Namespace) -> int:
    """Predict every input slide; exit 0 when all succeed, 1 when some failed, 2 for a bad model."""
    from pathlib import Path

    from histo_net.config import load_config
    from histo_net.predict.pipeline import PredictConfig  # deferred: torch, keeps --help fast
    from histo_net.predict.run import run_predict

    overrides = flag_overrides(args.overrides, batch_size=args.batch_size, workers=args.workers)
    cfg = load_config(PredictConfig, args.config, overrides)
    summary = run_predict(
        args.inputs, model_path=Path(args.model), out_dir=Path(args.out), cfg=cfg,
        device_name=args.device, mpp_override=args.mpp, shard=args.shard, overwrite=args.overwrite,
        progress=args.progress, slide_timeout_s=args.slide_timeout,
        encoder_weights=Path(args.encoder_weights) if args.encoder_weights else None)
    return summary.exit_code()
