"""The ``distill`` command: the top floor, above the pipeline (``training``), the service (``app``) and the model
zoo (``model_zoo``); it imports them, nothing imports it."""
