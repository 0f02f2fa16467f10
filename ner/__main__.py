"""``python -m ner predict ...``: see ner/cli.py."""

import sys

from ner.cli import main
from ner.errors import run_cli

sys.exit(run_cli(main))  # bad input: one `error: path:line: ...` line (--debug or NER_DEBUG=1: the traceback)
