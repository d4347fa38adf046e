"""``python -m memctl.cli``: the same as the ``memctl`` command."""

from memctl.cli import main

main()
