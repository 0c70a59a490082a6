"""``histo-net synth``: generate a synthetic H&E cohort with known truth."""

from __future__ import annotations

import argparse

from histo_net.cli.common import EXIT_OK, add_config_options, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options; each defaults to None so the YAML config (or schema default) applies."""
    parser.add_argument("--out", required=True, help="output folder (slides/, masks/, annotations/, "
                        "manifest.csv, preview.png)")
    parser.add_argument("--slides", type=positive_int, default=None, help="number of slides (default 8)")
    parser.add_argument("--seed", type=int, default=None, help="master seed (default 0)")
    parser.add_argument("--preset", choices=("tiny", "small", "benchmark"), default=None,
                        help="slide size preset (default tiny)")
    parser.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                        help="class names, 2 to 4; the first is neuroendocrine morphology")
    parser.add_argument("--stain-jitter", type=float, default=None,
                        help="between-slide stain variation (0 = none, preset default 0.5)")
    parser.add_argument("--format", choices=("svs", "tiff"), default=None,
                        help="svs (Aperio-style, default) or tiff (generic pyramidal TIFF)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="slides generated in parallel (default 1)")
    parser.add_argument("--no-preview", action="store_true", help="skip preview.png")
    add_config_options(parser, "default: built-in; see configs/synth.yaml")


def run(args: argparse.Namespace) -> int:
    """Generate the cohort and print the manifest path."""
    from pathlib import Path

    from histo_net.config import build_config, read_yaml
    from histo_net.synth import generate_cohort
    from histo_net.synth.settings import SynthConfig

    data = read_yaml(args.config) if args.config else {}
    cli = {"slides": args.slides, "seed": args.seed, "preset": args.preset, "classes": args.classes,
           "stain_jitter": args.stain_jitter, "format": args.format, "workers": args.workers}
    data.update({k: v for k, v in cli.items() if v is not None})
    cfg = build_config(SynthConfig, data, args.overrides, source=args.config or "synth options")
    manifest = generate_cohort(Path(args.out), n_slides=cfg.slides, seed=cfg.seed, preset=cfg.preset,
                               classes=cfg.classes, stain_jitter=cfg.stain_jitter, fmt=cfg.format,
                               workers=cfg.workers, preview=not args.no_preview)
    print(manifest)
    return EXIT_OK
