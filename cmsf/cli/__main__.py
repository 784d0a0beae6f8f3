"""``python -m cmsf.cli``: the ``cmsf`` command."""

from cmsf.cli.commands import main

main()
