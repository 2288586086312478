"""``python -m rater`` is the ``rater`` command."""

from rater.cli import main

main()
