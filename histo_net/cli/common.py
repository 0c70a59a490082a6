"""Option groups shared by subcommands (declared once) and exit-code constants."""

from __future__ import annotations

import argparse

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def positive_float(text: str) -> float:
    """argparse type: a float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
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


def add_config_options(parser: argparse.ArgumentParser, default_help: str) -> None:
    """--config YAML and repeatable --set key=value overrides."""
    parser.add_argument("--config", default=None, help=f"YAML config ({default_help})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set tile_size_px=256 (repeatable)")


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--device, --batch-size, --workers."""
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="compute device (auto: cuda when available)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="tiles per batch (default from the config, 64)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader worker processes reading tiles (default: min(4, cores))")


def flag_overrides(overrides: list[str], **flags: object) -> list[str]:
    """``--set`` overrides plus ``key=value`` for each dedicated flag the user gave (not None).

    Dedicated flags (``--batch-size``, ``--tile-size``...) win over ``--set`` and the config file.
    """
    return [*overrides, *(f"{key}={value}" for key, value in flags.items() if value is not None)]
