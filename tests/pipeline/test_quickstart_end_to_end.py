"""The whole offline pipeline through the user's commands: teacher -> direction -> pairs -> train -> export.

`distill quickstart` chains the same subcommands the README documents, on a tiny untrained teacher.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import torch

from model_zoo.registry import get_entry
from networks.pix2pixhd import load_generator
from training.manifest import read_manifest
from training.quickstart import ENTRY, run_quickstart


def test_quickstart_pipeline_end_to_end(tmp_path):
    zoo = run_quickstart(tmp_path, resolution=32, num_pairs=12, steps=3, num_fit=48)

    rows = read_manifest(tmp_path / "pairs")
    assert [r.seed for r in rows] == list(range(12))
    fit = json.loads((tmp_path / "brightness.json").read_text())
    assert fit["attribute"] == "brightness"

    entry = get_entry(ENTRY, root=zoo)
    assert entry.input_size == (32, 32)
    assert entry.teacher_path is not None and entry.direction_path is not None
    assert entry.manifest["export"]["parity_max_abs_diff"] <= 1e-4

    student = load_generator(tmp_path / "run" / "checkpoints" / "latest.pt").eval()
    session = ort.InferenceSession(str(entry.variant_path("fp32")), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 32, 48)).astype(np.float32)
    onnx_out = session.run(None, {"input": x})[0]
    with torch.no_grad():
        torch_out = student(torch.from_numpy(x)).numpy()
    assert np.abs(onnx_out - torch_out).max() < 1e-4
