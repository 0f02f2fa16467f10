"""``python -m ner predict ...``: see ner/cli.py."""

import sys

from ner.cli import main

sys.exit(main())
