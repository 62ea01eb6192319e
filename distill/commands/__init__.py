"""The ``distill`` subcommands: each module's ``register(subparsers)`` adds its parser and sets ``func``, builds
the library's options object from the flags and calls the library. The library names options fields in its
errors (core.errors.FieldError); distill.cli prints them with the flag.

Two pieces of argv stay below this floor, for the toy-domain recipe, which runs some stages as commands:
the toy domain's stage parsers (training/toyfaces/commands.py) and the shared flag helpers
(training/options.py: options_from_args, the scorer and pix2pixHD model flags, run_command)."""
