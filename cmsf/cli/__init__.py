"""The ``cmsf`` command."""
