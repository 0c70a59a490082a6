"""``histo-net evaluate``: metrics of a model bundle on any labelled manifest."""

from __future__ import annotations

import argparse

from histo_net.cli.common import EXIT_OK, add_device_options, add_progress_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the evaluate options."""
    parser.add_argument("--model", required=True, help="model bundle (RUN/model.pt)")
    parser.add_argument("--manifest", required=True,
                        help="labelled CSV slide_id,patient_id,path,label[,annotations][,mpp]")
    parser.add_argument("--out", required=True,
                        help="output folder: metrics.json, report.md, roc.png, reliability.png")
    parser.add_argument("--allow-overlap", action="store_true",
                        help="score slides the model trained or validated on (refused by default; "
                        "the figures are then optimistic)")
    parser.add_argument("--encoder-weights", default=None, metavar="PATH",
                        help="weights file of the bundle's pretrained encoder (default: the path "
                        "recorded at training time); refused unless its sha256 matches")
    add_device_options(parser)
    add_progress_option(parser)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the headline metrics."""
    from pathlib import Path

    from histo_net.train.run import evaluate_bundle  # deferred: torch, keeps --help fast

    result = evaluate_bundle(Path(args.model), Path(args.manifest), Path(args.out),
                             device=args.device, workers=args.workers, progress=args.progress,
                             allow_overlap=args.allow_overlap,
                             encoder_weights=Path(args.encoder_weights) if args.encoder_weights else None)
    metrics = result.to_json(per_slide=False)
    keys = ("slide_auroc", "balanced_accuracy", "tile_auroc", "attention_localisation_auroc",
            "ece_before_scaling", "ece_after_scaling", "confident_fraction", "confident_error_rate")
    summary = ", ".join(f"{k}={metrics[k]:.3f}" for k in keys if isinstance(metrics.get(k), (int, float)))
    outcomes = ", ".join(f"{k} {v}" for k, v in result.outcome_counts.items() if v)
    print(f"{result.n_slides} slides: {summary}\noutcomes: {outcomes}\n"
          f"report: {Path(args.out) / 'report.md'}")
    return EXIT_OK
