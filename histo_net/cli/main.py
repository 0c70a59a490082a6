"""Entry point: builds the parser from the subcommand modules and maps errors to exit codes.

Exit codes: 0 all succeeded, 1 some slides failed (the rest are done), 2 usage,
configuration or model-bundle error (a missing or unusable ``--model``). Expected errors
print one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from histo_net import __version__
from histo_net.cli.common import EXIT_FAILED, EXIT_USAGE
from histo_net.errors import ConfigError, HistoNetError, ModelBundleError

#: subcommand name -> (module, one-line help)
SUBCOMMANDS: tuple[tuple[str, str, str], ...] = (
    ("synth", "histo_net.cli.synth", "generate a synthetic H&E cohort with known truth"),
    ("tile", "histo_net.cli.tile", "detect tissue and write tile coordinates for slides"),
    ("train", "histo_net.cli.train", "train the tile CNN and attention-MIL model into a bundle"),
    ("evaluate", "histo_net.cli.evaluate", "evaluate a model bundle on a labelled manifest"),
    ("predict", "histo_net.cli.predict", "predict slides and write pathologist reports"),
    ("demo", "histo_net.cli.demo", "synthesise, train, predict and report end to end"),
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per available subcommand."""
    parser = argparse.ArgumentParser(
        prog="histo-net",
        description="Whole-slide H&E pipeline: neuroendocrine vs other small round cell "
        "tumour morphology. Research use only; not a diagnostic device.",
    )
    parser.add_argument("--version", action="version", version=f"histo-net {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name, help_text in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # subcommand not built yet
            raise
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sp)
        sp.set_defaults(run=module.run)
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.run(args))
    except (ConfigError, ModelBundleError) as exc:
        print(f"histo-net {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HistoNetError as exc:
        print(f"histo-net {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"histo-net {args.command}: interrupted", file=sys.stderr)
        return 130
