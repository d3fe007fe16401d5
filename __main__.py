"""``python -m evorank``: the ``evorank`` command."""
import sys

from evorank.evolve.cli.main import main

sys.exit(main())
