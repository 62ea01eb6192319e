"""INT8 calibration must use every calibration image (ONNX Runtime's chunked MinMax option drops all but
the last chunk, so the variant builder must not use it)."""

from __future__ import annotations

import numpy as np
import torch

from engines.ort import cpu_session
from engines.select import psnr_db
from training.variants import quantize_int8, run_session


def test_int8_calibration_uses_every_image(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 3, 3, padding=1),
    ).eval()
    fp32 = tmp_path / "model.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, 16, 16),),
        str(fp32),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "h", 3: "w"}},
    )
    rng = np.random.default_rng(0)
    # The first image spans the full range, the seven others are nearly flat: a calibrator that only saw
    # the last images would clip the first one's activations.
    calibration = [rng.uniform(-1, 1, (3, 16, 16)).astype(np.float32)]
    calibration += [0.01 * rng.uniform(-1, 1, (3, 16, 16)).astype(np.float32) for _ in range(7)]
    int8 = quantize_int8(fp32, tmp_path / "model.int8.onnx", calibration)

    first = calibration[0][None]
    ref = run_session(cpu_session(fp32), first)
    out = run_session(cpu_session(int8), first)
    assert psnr_db(out, ref) > 30


def test_fp16_conversion_summarises_the_clamping_warnings_in_one_line(tmp_path, capsys):
    import warnings

    import onnx
    from onnx import TensorProto, helper

    from training.variants import convert_fp16

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3])
    inits = [helper.make_tensor(f"c{i}", TensorProto.FLOAT, [3], [1e-9, -1e-9, 1.0]) for i in range(3)]
    nodes = [helper.make_node("Add", ["input", "c0"], ["s0"]), helper.make_node("Add", ["s0", "c1"], ["s1"])]
    nodes.append(helper.make_node("Add", ["s1", "c2"], ["output"]))
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    src = tmp_path / "m.onnx"
    src.write_bytes(model.SerializeToString())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convert_fp16(src, tmp_path / "m.fp16.onnx")
    assert not [w for w in caught if "truncated" in str(w.message)]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fp16: 6 clampings of float32 weights")
    assert onnx.load(str(tmp_path / "m.fp16.onnx")).graph.initializer
