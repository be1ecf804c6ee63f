"""The command line's consoles: wide tables when the output is a log or a pipe (rich would wrap them at 80 columns)."""

import sys

from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 150)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)
