"""The ``distill`` subcommands that live on the command-line floor: each module's ``register(subparsers)`` adds
its parser and sets ``func``. The pipeline stages still register from their library modules (``training.*``)."""
