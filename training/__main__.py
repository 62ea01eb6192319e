"""``python -m training`` (``torchrun -m training train ...``): the ``distill`` command, as before it moved to the
top floor (distill/). A launcher only: no module imports it."""

import sys

from distill.cli import main

sys.exit(main())
