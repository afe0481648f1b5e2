"""``python -m ladarun``: the ``ladarun`` command."""

from .cli import main

main()
