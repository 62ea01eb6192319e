"""The toy-face domain: renderer, attribute model, teacher training and the recipe of the shipped toyfaces-age entry.

Its commands (`distill toyfaces ...`) are in :mod:`training.toyfaces.commands` and :mod:`distill.commands.toyfaces`."""
