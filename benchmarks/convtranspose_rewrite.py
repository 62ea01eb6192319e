"""ConvTranspose (kernel 3, stride 2, padding 1, output padding 1: pix2pixHD's upsampling) rewritten as
Conv (kernel 2, padded bottom/right by one) + DepthToSpace (block 2, CRD): the same arithmetic, so the
output is equal up to float summation order, and ONNX Runtime's INT8 quantizer, which has no int8
ConvTranspose on the CPU, can quantize the upsampling layers as plain Convs.

Output pixel (2i+a, 2j+b) of the transposed convolution reads input rows i (tap 1 when a = 0; tap 2 when
a = 1) and i+1 (tap 0 when a = 1), and likewise for columns: a 2x2 convolution per output phase (a, b),
the four phases stacked as channels ``o*4 + a*2 + b`` and put back in place by DepthToSpace.

Used by benchmarks/student_benchmark.py to measure whether it helps; `distill export` does not apply it
(see benchmarks/results/student_cpu.md for the figures and the decision).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

# (phase, tap of the 2x2 kernel) -> tap of the 3x3 transposed kernel
_TAPS = {(0, 0): 1, (1, 0): 2, (1, 1): 0}


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def rewritable(node: onnx.NodeProto, inits: dict[str, np.ndarray]) -> bool:
    """A ConvTranspose with pix2pixHD's geometry and constant weights."""
    if node.op_type != "ConvTranspose" or node.input[1] not in inits:
        return False
    a = _attrs(node)
    return (
        list(a.get("strides", [1, 1])) == [2, 2]
        and list(a.get("kernel_shape", [3, 3])) == [3, 3]
        and list(a.get("pads", [0] * 4)) == [1, 1, 1, 1]
        and list(a.get("output_padding", [0, 0])) == [1, 1]
        and a.get("group", 1) == 1
        and list(a.get("dilations", [1, 1])) == [1, 1]
        and inits[node.input[1]].shape[2:] == (3, 3)
    )


def subpixel_weights(w: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """ConvTranspose weights [Cin, Cout, 3, 3] (+ bias [Cout]) -> Conv weights [4*Cout, Cin, 2, 2] (+ bias)."""
    cin, cout = w.shape[:2]
    k = np.zeros((cout, 2, 2, cin, 2, 2), w.dtype)  # [o, a, b, c, dh, dw]
    for (a, dh), kh in _TAPS.items():
        for (bb, dw), kw in _TAPS.items():
            k[:, a, bb, :, dh, dw] = w[:, :, kh, kw].T
    return k.reshape(cout * 4, cin, 2, 2), None if b is None else np.repeat(b, 4)


def rewrite(src: str, dst: str) -> int:
    """Rewrite every eligible ConvTranspose of the model at ``src`` into Conv + DepthToSpace; write ``dst``;
    the number rewritten."""
    model = onnx.load(src)
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        if not rewritable(node, inits):
            nodes.append(node)
            continue
        w = inits[node.input[1]]
        b = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        k, kb = subpixel_weights(w, b)
        name = node.name or f"convtranspose_{count}"
        graph.initializer.append(numpy_helper.from_array(k, f"{name}_subpixel_w"))
        inputs = [node.input[0], f"{name}_subpixel_w"]
        if kb is not None:
            graph.initializer.append(numpy_helper.from_array(kb, f"{name}_subpixel_b"))
            inputs.append(f"{name}_subpixel_b")
        mid = f"{name}_subpixel"
        nodes.append(
            helper.make_node(
                "Conv",
                inputs,
                [mid],
                name=f"{name}_conv",
                kernel_shape=[2, 2],
                pads=[0, 0, 1, 1],
                strides=[1, 1],
            )
        )
        nodes.append(
            helper.make_node(
                "DepthToSpace", [mid], list(node.output), name=f"{name}_d2s", blocksize=2, mode="CRD"
            )
        )
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    return count
