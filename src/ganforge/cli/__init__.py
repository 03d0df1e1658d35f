"""The ``ganforge`` command line: thin typer commands over library calls.

Each command parses its flags (made from a pydantic model by ``ganforge.cli.options``), calls one
library function and turns a ``GanforgeError`` into one line on stderr and exit code 2. ``app`` is the
console entry point (``ganforge = "ganforge.cli:app"``).
"""

from ganforge.cli.app import app, main

__all__ = ["app", "main"]
