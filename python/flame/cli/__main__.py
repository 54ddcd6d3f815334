"""``python -m flame.cli``: the ``flame`` command line."""

from flame.cli import cli_main

cli_main()
