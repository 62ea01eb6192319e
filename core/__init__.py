"""The floor below everything: user-facing errors, atomic writes, hashing, run-folder names and records,
library versions. Imports nothing from ``training``, ``app`` or ``model_zoo``; they import from here.

Floors, each importing only the ones below it::

    distill (the ``distill`` entry point)
    training (the pipeline stages)   app (the service)
    model_zoo (the entry schema and registry)
    core
"""
