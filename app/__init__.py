"""The HTTP service: model-zoo students on ONNX Runtime or OpenVINO, the legacy projection path, Prometheus metrics.

Run it with ``DISTILL_MODEL_ZOO=path/to/zoo distill serve`` (settings: :mod:`app.config`).

- :mod:`app.main`       ``create_app()``: lifespan, middleware (body limit, metrics), error handlers, routers
- :mod:`app.routers`    ``/transform``, ``/legacy/transform``, ``/models``, ``/healthz``, ``/readyz``, ``/metrics``
- :mod:`app.service`    per-process state: loaded models (session + micro-batcher) and the legacy pool
- :mod:`app.runtime`    the engine serving each model, chosen by measurement; contract check, warm-up
- :mod:`engines`        (a floor below) ONNX Runtime (CPU, CUDA, TensorRT) and OpenVINO behind one interface
- :mod:`app.batching`   the dynamic micro-batcher (bounded queue, max batch, max wait)
- :mod:`app.legacy`     the projection path in a bounded pool of processes with a timeout
- :mod:`app.imaging`    upload validation, decoding, the geometry policy, encoding
- :mod:`app.metrics`    Prometheus metrics, multiprocess-aware
- :mod:`distill.commands.serve` ``distill serve`` (the command line, above the service)
"""
