"""Option groups shared by subcommands (declared once) and exit-code constants."""

from __future__ import annotations

import argparse

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _positive(text: str, cast: type[int | float], kind: str) -> float:
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
    if not value > 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite-or-inf float > 0 (NaN refused)."""
    return float(_positive(text, float, "a number"))


def positive_int(text: str) -> int:
    """argparse type: an int > 0."""
    return int(_positive(text, int, "an integer"))


def workers_value(text: str) -> int | str:
    """argparse type for --workers: an int >= 0 or ``auto`` (chosen from cores and device)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'auto', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'auto', got {text!r}")
    return value


def add_slide_inputs(parser: argparse.ArgumentParser) -> None:
    """INPUT... (slides, folders, manifest CSVs), --out, --mpp, --overwrite."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="slide files, folders of slides, or manifest CSVs "
                        "(slide_id,patient_id,path[,label][,mpp])")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--mpp", type=positive_float, default=None,
                        help="microns per pixel for slides whose file lacks it (overrides metadata)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo slides whose outputs already exist with the same settings")


def add_config_options(parser: argparse.ArgumentParser, default_help: str,
                       example: str | None = None) -> None:
    """--config YAML and repeatable --set key=value overrides (``example``: a valid key=value)."""
    parser.add_argument("--config", default=None, help=f"YAML config ({default_help})")
    hint = f"e.g. --set {example}" if example else "dotted keys of the config"
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override one config key, {hint} (repeatable)")


def add_shard_option(parser: argparse.ArgumentParser) -> None:
    """--shard I/N (torchrun ranks and SLURM array tasks split slides the same way)."""
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="process only shard I of N (deterministic by slide id); under torchrun "
                        "ranks split the slides automatically")


def add_slide_timeout_option(parser: argparse.ArgumentParser) -> None:
    """--slide-timeout S: wall-clock limit on each slide's open, tiling and thumbnail."""
    parser.add_argument("--slide-timeout", dest="slide_timeout", type=positive_float, default=None,
                        metavar="S",
                        help="stop a slide whose open, tissue detection, tiling and thumbnail take "
                        "longer than S seconds (it fails with slide_timeout, the batch goes on); "
                        "default 120 s + 60 s per gigapixel of the slide")


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """--no-progress (progress bars on by default)."""
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="hide progress bars")


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--device, --batch-size, --workers."""
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="compute device (auto: cuda when available)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="tiles per batch (default from the config, 64)")
    parser.add_argument("--workers", type=workers_value, default=None,
                        help="DataLoader worker processes reading tiles: a number or 'auto' "
                             "(from cores and device; default: min(4, cores))")


def flag_overrides(overrides: list[str], **flags: object) -> list[str]:
    """``--set`` overrides plus ``key=value`` for each dedicated flag the user gave (not None).

    Dedicated flags (``--batch-size``, ``--tile-size``...) win over ``--set`` and the config file.
    """
    return [*overrides, *(f"{key}={value}" for key, value in flags.items() if value is not None)]
