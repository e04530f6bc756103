"""``python -m iif`` runs the ``iif`` command, like ``python -m iif.cli`` (for environments without the script on
PATH, and ``torchrun -m iif``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
