"""``python -m histo_net`` (also ``torchrun -m histo_net``)."""

import sys

from histo_net.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
