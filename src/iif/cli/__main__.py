"""``python -m iif.cli`` runs the ``iif`` command (handy under ``torchrun -m``)."""

import sys

from . import main

sys.exit(main())
