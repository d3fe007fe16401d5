"""``python -m evorank``: the ``evorank`` command."""
import sys

from evorank.evolve.cli import main

sys.exit(main())
