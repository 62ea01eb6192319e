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
