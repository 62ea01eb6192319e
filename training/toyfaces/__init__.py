"""The toy-face domain: renderer, attribute model, teacher training and the recipe of the shipped toyfaces-age entry.

Its commands (`distill toyfaces ...`) are in :mod:`training.toyfaces.commands`."""

from training.toyfaces.commands import register  # the recipe runs the toy stages by argv through it

__all__ = ["register"]
