"""Builders shared by the pipeline tests (one copy each, imported from here, never from another test module):
pair datasets, trainer options, a tiny generator, tiny ONNX students and scorers with known answers."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from editing.images import save_image
from networks.pix2pixhd import build_generator, get_preset
from training.manifest import PairRecord, write_manifest, write_metadata
from training.trainer import TrainOptions


def make_pair_dataset(root: Path, n: int = 12, size: int = 32, keep: list[bool | None] | None = None) -> Path:
    """``n`` pairs of ``size`` px images; B is A with channels rolled and brightened (a fixed, learnable edit).

    A is asymmetric left/right (a horizontal ramp), so a flip is visible in the pixels.
    """
    rng = np.random.default_rng(1234)
    rows = []
    ramp = np.linspace(0, 200, size, dtype=np.float32)[None, :, None]
    for i in range(n):
        seed = 100 + 7 * i
        base = rng.uniform(0, 55, (size, size, 3)).astype(np.float32)
        a = np.clip(base + ramp, 0, 255).astype(np.uint8)
        b = np.clip(np.roll(a, 1, axis=2).astype(np.float32) * 0.8 + 40, 0, 255).astype(np.uint8)
        save_image(root / "train_A" / f"{seed:08d}.png", a)
        save_image(root / "train_B" / f"{seed:08d}.png", b)
        rows.append(
            PairRecord(
                seed=seed,
                a=f"train_A/{seed:08d}.png",
                b=f"train_B/{seed:08d}.png",
                alpha=1.5,
                truncation=0.7,
                direction="test.npy",
                keep=None if keep is None else keep[i],
            )
        )
    write_manifest(root, rows)
    write_metadata(root, {"teacher": "synthetic", "size": size})
    return root


def tiny_options(dataset: Path, out: Path, **kw) -> TrainOptions:
    base = dict(
        dataset=str(dataset),
        out=str(out),
        preset="tiny",
        batch_size=2,
        workers=0,
        device="cpu",
        sample_every=3,
        log_every=1,
        val_fraction=0.2,
        progress=False,
    )
    return TrainOptions(**(base | kw))


def tiny_generator(seed: int = 0, **overrides) -> torch.nn.Module:
    """The tiny preset's Pix2PixHD generator, seeded, in eval mode."""
    torch.manual_seed(seed)
    return build_generator(get_preset("tiny", **overrides)).eval()


def multi_edit_generator(condition: str, k: int, seed: int = 0) -> torch.nn.Module:
    """A tiny generator of ``k`` edits (strength [N, k]), its weights nudged off their init so every edit changes
    the output (all zeros still give back the input: the residual student's identity)."""
    torch.manual_seed(seed)
    G = build_generator(get_preset("tiny", residual=True, condition=condition, n_edits=k))
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return G.eval()


class Brightness(torch.nn.Module):
    """Output 0: mean over pixels and channels; output 1: mean of the red channel minus 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.mean(dim=(1, 2, 3)), x[:, 0].mean(dim=(1, 2)) - 1.0], dim=1)


def export_scorer(module: torch.nn.Module, path: Path, size: int) -> Path:
    """``module`` ([N,3,size,size] -> [N,K] scores) as an ONNX scorer with a dynamic batch, as `distill filter`,
    `distill direction` and the service's domain check read one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is the one we want
        torch.onnx.export(
            module,
            (torch.zeros(1, 3, size, size),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["scores"],
            dynamic_axes={"input": {0: "n"}, "scores": {0: "n"}},
        )
    return path


def make_dataset(root: Path, levels_a: list[int], levels_b: list[int], size: int = 16) -> Path:
    """A pair dataset whose images are flat grey with the given levels (seeds 10, 11, ...)."""
    rows = []
    for i, (la, lb) in enumerate(zip(levels_a, levels_b, strict=True)):
        seed = 10 + i
        a, b = f"train_A/{seed:08d}.png", f"train_B/{seed:08d}.png"
        save_image(root / a, np.full((size, size, 3), la, np.uint8))
        save_image(root / b, np.full((size, size, 3), lb, np.uint8))
        rows.append(PairRecord(seed=seed, a=a, b=b, alpha=1.5, truncation=0.7, direction="d.npy"))
    write_metadata(root, {"format": "distill-pairs/1", "resolution": size})
    write_manifest(root, rows)
    return root


def _save(model: onnx.ModelProto, path) -> None:
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def student_onnx(path, add: float) -> None:
    """input [N,3,H,W] -> clip(input + add, -1, 1), dynamic batch and size."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H", "W"])
    inits = [
        helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("c", add), ("lo", -1.0), ("hi", 1.0))
    ]
    nodes = [
        helper.make_node("Add", ["input", "c"], ["s"]),
        helper.make_node("Clip", ["s", "lo", "hi"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "student", [x], [y], inits)
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def scorer_onnx(path, res: int = 16) -> None:
    """[N,3,res,res] -> [N,2]: mean brightness, mean red minus mean green."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, res, res])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2])
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3, 2], [1 / 3, 1.0, 1 / 3, -1.0, 1 / 3, 0.0])
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=1),
        helper.make_node("Flatten", ["m"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "w"], ["scores"]),
    ]
    graph = helper.make_graph(nodes, "scorer", [x], [y], [weights])
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
