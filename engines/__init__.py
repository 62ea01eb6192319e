"""Inference engines for the service, the export and the evaluation, behind one small interface
(:class:`~engines.base.Engine`). A floor below `training` and `app`: imports only `core` and `model_zoo`.

- :mod:`engines.base`    the interface, a candidate's spec (engine, device, variant, precision), results
- :mod:`engines.ort`     ONNX Runtime: CPU, CUDA (I/O binding), TensorRT where the build has it
- :mod:`engines.ov`      OpenVINO on the CPU: f32, bf16, the INT8 QDQ file; compiled-model cache
- :mod:`engines.select`  the candidates for an entry, the accuracy gate, timing, the choice
- :mod:`engines.cpu`     the CPU's ISA features (AVX2, AVX-512, VNNI, AVX-512 BF16, AMX)
- :mod:`engines.measure` the engine table ``distill export`` writes and ``distill evaluate`` reports
"""
