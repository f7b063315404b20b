"""``python -m chimeway.cli``: the ``chimeway`` command."""

from chimeway.cli import main

main()
