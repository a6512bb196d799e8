"""Sub-commands of the ``unetkit`` CLI, one module each (see :mod:`unetkit.cli`)."""
