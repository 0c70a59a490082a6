"""``histo-net demo``: synthesise a small cohort, train, predict held-out slides, print the report path."""

from __future__ import annotations

import argparse

from histo_net.cli.common import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare demo's options."""
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--slides", type=positive_int, default=24, help="synthetic slides (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="cohort and training seed")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers")


def run(args: argparse.Namespace) -> int:
    """Run the four demo steps; exit 0 when every held-out slide got a report."""
    from pathlib import Path

    from histo_net.cli.demo_run import run_demo

    return run_demo(Path(args.out), n_slides=args.slides, seed=args.seed, device=args.device,
                    workers=args.workers)
