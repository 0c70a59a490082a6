"""Command-line interface. Subcommands live one per module and import heavy
dependencies only inside ``run`` so ``histo-net --help`` stays instant."""

from histo_net.cli.main import main

__all__ = ["main"]
