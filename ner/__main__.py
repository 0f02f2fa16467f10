"""``python -m ner predict ...``: see ner/predict/cli.py."""

import sys

from ner.errors import run_cli
from ner.predict.cli import main

sys.exit(run_cli(main))  # bad input: one `error: path:line: ...` line (--debug or NER_DEBUG=1: the traceback)
