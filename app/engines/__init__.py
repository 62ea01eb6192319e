"""Inference engines for the service, behind one small interface (:class:`~app.engines.base.Engine`).

- :mod:`app.engines.base`    the interface, a candidate's spec (engine, device, variant, precision), results
- :mod:`app.engines.ort`     ONNX Runtime: CPU, CUDA (I/O binding), TensorRT where the build has it
- :mod:`app.engines.ov`      OpenVINO on the CPU: f32, bf16, the INT8 QDQ file; compiled-model cache
- :mod:`app.engines.select`  the candidates for an entry, the accuracy gate, timing, the choice
- :mod:`app.engines.cpu`     the CPU's ISA features (AVX2, AVX-512, VNNI, AVX-512 BF16, AMX)
- :mod:`app.engines.measure` the engine table ``distill export`` writes and ``distill evaluate`` reports
"""
