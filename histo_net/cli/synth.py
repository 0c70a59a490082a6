"""``histo-net synth``: generate a synthetic H&E cohort with known truth."""

from __future__ import annotations

import argparse

from histo_net.cli.common import EXIT_OK, add_config_options, positive_int

#: the taxonomy, spelled out here so ``--help`` stays instant (checked against
#: ``histo_net.taxonomy`` by the synth tests)
SUBTYPE_CHOICES = ("net_well_differentiated", "nec_small_cell", "merkel_cell_like",
                   "lymphoma_like", "ewing_like", "alveolar_rms_like")


def fraction_range(text: str) -> tuple[float, float]:
    """argparse type: ``X`` (fixed) or ``LOW,HIGH`` tumour fractions in [0, 0.9]."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or LOW,HIGH pair: {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not 0 <= values[0] <= values[1] <= 0.9:
        raise argparse.ArgumentTypeError(f"need X or LOW,HIGH with 0 <= LOW <= HIGH <= 0.9: {text!r}")
    return values[0], values[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options; each defaults to None so the YAML config (or schema default) applies."""
    parser.add_argument("--out", required=True, help="output folder (slides/, masks/, annotations/, "
                        "manifest.csv, preview.png)")
    parser.add_argument("--slides", type=positive_int, default=None, help="number of slides (default 8)")
    parser.add_argument("--seed", type=int, default=None, help="master seed (default 0)")
    parser.add_argument("--preset", choices=("tiny", "small", "benchmark"), default=None,
                        help="slide size preset (default tiny)")
    parser.add_argument("--difficulty", choices=("easy", "standard"), default=None,
                        help="standard (default): nuisance variables shared by all subtypes; easy: "
                        "label-dependent nuclear size and density, for fast tests")
    parser.add_argument("--subtypes", nargs="+", choices=SUBTYPE_CHOICES, default=None, metavar="SUBTYPE",
                        help=f"tumour subtypes to draw (default all: {', '.join(SUBTYPE_CHOICES)})")
    parser.add_argument("--normal-fraction", type=float, default=None,
                        help="share of slides without tumour (subtype 'normal', empty label; default 0)")
    parser.add_argument("--tumour-fraction", type=fraction_range, default=None, metavar="X|LOW,HIGH",
                        help="tumour share of tissue per slide (default 0.02,0.6 standard; 0.15,0.45 "
                        "easy); 0 makes every slide normal")
    parser.add_argument("--stain-jitter", type=float, default=None,
                        help="between-slide stain variation (0 = none, preset default 0.5; 1.0 = twice that)")
    parser.add_argument("--format", choices=("svs", "tiff"), default=None,
                        help="svs (Aperio-style, default) or tiff (generic pyramidal TIFF)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="slides generated in parallel (default 1)")
    parser.add_argument("--no-preview", action="store_true", help="skip preview.png")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_options(parser, "default: built-in; see configs/synth.yaml")


def run(args: argparse.Namespace) -> int:
    """Generate the cohort (a progress bar per slide on stderr) and print the manifest path."""
    import sys  # deferred imports below keep ``histo-net --help`` fast
    from pathlib import Path

    from tqdm.auto import tqdm

    from histo_net.config import build_config, read_yaml
    from histo_net.synth import generate_cohort, plan_cohort
    from histo_net.synth.settings import SynthConfig

    data = read_yaml(args.config) if args.config else {}
    cli = {"slides": args.slides, "seed": args.seed, "preset": args.preset, "difficulty": args.difficulty,
           "subtypes": args.subtypes, "normal_fraction": args.normal_fraction,
           "tumour_fraction": args.tumour_fraction, "stain_jitter": args.stain_jitter,
           "format": args.format, "workers": args.workers}
    data.update({k: v for k, v in cli.items() if v is not None})
    cfg = build_config(SynthConfig, data, args.overrides, source=args.config or "synth options")
    plan_cohort(cfg.slides, cfg.seed, cfg.preset, subtypes=cfg.subtypes, stain_jitter=cfg.stain_jitter,
                fmt=cfg.format, difficulty=cfg.difficulty, normal_fraction=cfg.normal_fraction,
                tumour_fraction=cfg.tumour_fraction)  # usage errors before the bar appears
    bar = tqdm(total=cfg.slides, desc="synth", unit="slide", file=sys.stderr, dynamic_ncols=True,
               disable=args.no_progress)

    def progress(done: int, total: int, row: dict[str, object]) -> None:
        bar.set_postfix_str(f"{row['slide_id']} {row['subtype']} {row['generator_seconds']} s", refresh=False)
        bar.update(done - bar.n)

    try:
        manifest = generate_cohort(Path(args.out), n_slides=cfg.slides, seed=cfg.seed, preset=cfg.preset,
                                   difficulty=cfg.difficulty, subtypes=cfg.subtypes,
                                   normal_fraction=cfg.normal_fraction, tumour_fraction=cfg.tumour_fraction,
                                   stain_jitter=cfg.stain_jitter, fmt=cfg.format, workers=cfg.workers,
                                   preview=not args.no_preview, progress=progress)
    finally:
        bar.close()
    print(manifest)
    return EXIT_OK
