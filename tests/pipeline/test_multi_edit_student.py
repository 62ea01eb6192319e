"""The student of K edits: strength [N, K], exact at all zeros, ONNX and variants with the vector, trained,
resumed and exported from multi-edit pairs."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch

from core.errors import DistillError
from distill.cli import main
from engines.ort import cpu_session
from model_zoo.registry import get_entry
from networks.pix2pixhd import get_preset, load_generator, save_generator
from networks.pix2pixhd.conditional import edit_count
from tests.pipeline_helpers import multi_edit_generator
from training.export import check_parity, export_onnx
from training.pairs import PairEdit, generate_pairs
from training.strength import StrengthRange
from training.variants import build_variant, run_session

K = 3
RANGES = [StrengthRange(-1.0, 1.0), StrengthRange(0.5, 1.5), StrengthRange(-1.0, 1.0)]


def tiny(condition: str) -> torch.nn.Module:
    """A tiny generator of K edits whose every edit changes the output."""
    return multi_edit_generator(condition, K)


@pytest.fixture(scope="module")
def multi_pairs(pair_teacher, tmp_path_factory):
    """Ten 16 px pairs of three named edits (``distill pairs --direction NAME=FILE ...``), unfiltered."""
    root = tmp_path_factory.mktemp("multi")
    edits = []
    for k, (name, r) in enumerate(zip(("age", "smile", "glasses"), RANGES, strict=True)):
        np.save(root / f"{name}.npy", np.random.default_rng(10 + k).standard_normal(32).astype(np.float32))
        edits.append(PairEdit(name, root / f"{name}.npy", alpha=1.0, range=r))
    out = root / "pairs"
    generate_pairs(pair_teacher[0], None, out, edits=edits, num=10, device="cpu", progress=False)
    return out


def train_opts(dataset, out, **kw):
    from training.trainer import TrainOptions

    args = {
        "preset": "tiny",
        "batch_size": 2,
        "max_steps": 2,
        "workers": 0,
        "progress": False,
        "device": "cpu",
    }
    return TrainOptions(dataset=str(dataset), out=str(out), val_fraction=0.25, **{**args, **kw})


@pytest.mark.parametrize("condition", ("plane", "modulation"))
def test_all_zeros_is_the_identity_and_each_edit_matters(condition):
    G = tiny(condition)
    assert edit_count(G) == K
    x = torch.rand(4, 3, 16, 16) * 1.8 - 0.9
    s = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])
    with torch.no_grad():
        assert torch.equal(G(x, torch.zeros(4, K)), x)
        y = G(x, s)
        assert y.shape == x.shape
        one = G(x[:1].expand(4, -1, -1, -1), s)
    for i in range(4):
        assert not torch.allclose(y[i], x[i])
    assert len({tuple(one[i].flatten()[:64].tolist()) for i in range(4)}) == 4  # four edits, four answers
    with pytest.raises(DistillError, match="4 images but 2 strengths"):
        G(x, torch.zeros(2, K))


def test_several_edits_need_a_generator_that_sees_them():
    with pytest.raises(DistillError, match="plane or modulation"):
        get_preset("tiny", residual=True, condition="scale", n_edits=2)
    with pytest.raises(DistillError, match="n_edits"):
        get_preset("tiny", residual=True, condition="plane", n_edits=0)


@pytest.mark.parametrize("condition", ("plane", "modulation"))
def test_checkpoint_round_trip(condition, tmp_path):
    G = tiny(condition)
    H = load_generator(save_generator(G, tmp_path / "g.pt"))
    assert H.config.n_edits == K and H.config.input_nc == 3
    x, s = torch.rand(2, 3, 16, 16) * 2 - 1, torch.tensor([[0.7, 0.0, -1.0], [0.0, 1.2, 0.0]])
    with torch.no_grad():
        assert torch.equal(G(x, s), H(x, s))


def test_onnx_takes_the_vector_with_parity_and_exact_zeros(tmp_path):
    G = tiny("modulation")
    path = export_onnx(G, tmp_path / "m.onnx", (32, 32))
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input", "strength"]
    dims = graph.input[1].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", K]
    ranges = [r.as_list() for r in RANGES]
    parity = check_parity(G, path, [(32, 32), (32, 48)], batch=3, edit_ranges=[tuple(r) for r in ranges])
    assert parity["parity_max_abs_diff"] < 1e-4 and parity["parity_zero_strength_max_abs_diff"] == 0.0
    with pytest.raises(DistillError, match="3 edit strengths but 1 ranges"):
        check_parity(G, path, [(32, 32)])
    x = np.random.default_rng(0).uniform(-0.9, 0.9, (3, 3, 32, 32)).astype(np.float32)
    s = np.array([[0, 0, 0], [1, 0, 0], [-1, 1.5, 0.5]], np.float32)
    y = run_session(cpu_session(path), x, batch=3, strengths=s)
    assert np.array_equal(y[0], x[0])
    with torch.no_grad():
        ref = G(torch.from_numpy(x), torch.from_numpy(s)).numpy()
    assert np.abs(y - ref).max() < 1e-4


def test_fp16_and_int8_take_the_vector_and_give_back_the_input_at_zeros(tmp_path):
    G = tiny("plane")
    path = export_onnx(G, tmp_path / "model.onnx", (32, 32))
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 32, 32)).astype(np.float32)
    s = np.array([[-1, 0, 0], [0, 0.5, 0], [0.5, 1.5, 0], [0, 0, 0]], np.float32)
    fp16 = build_variant(
        "fp16", path, tmp_path, eval_images=x, native_size=(32, 32), eval_strengths=s, timing_repeats=1
    )
    int8 = build_variant(
        "int8",
        path,
        tmp_path,
        eval_images=x,
        calibration=list(x),
        calibration_strengths=s.tolist(),
        native_size=(32, 32),
        eval_strengths=s,
        min_psnr_db=30,
        timing_repeats=1,
    )
    assert fp16["psnr_vs_fp32_db"] > 35 and int8["psnr_vs_fp32_db"] > 30
    assert "strength vectors of 3 edits, -1 to 1.5" in int8["calibration_method"]
    zeros = np.zeros((4, K), np.float32)
    for name, identity in ((fp16["file"], x.astype(np.float16).astype(np.float32)), (int8["file"], x)):
        session = cpu_session(
            tmp_path / name
        )  # fp16 computes in float16 throughout, the input's cast included
        assert [i.name for i in session.get_inputs()] == ["input", "strength"]
        assert np.array_equal(run_session(session, x, 4, zeros), identity)


@pytest.mark.filterwarnings("ignore:.*no filter has run")
def test_train_resume_and_export_on_multi_edit_pairs(multi_pairs, tmp_path):
    from training.trainer import train

    run = tmp_path / "run"
    result = train(
        train_opts(multi_pairs, run), {"residual": True, "condition": "modulation", "lambda_l1": 10.0}
    )
    assert result.status in ("max_steps", "finished")
    G = load_generator(run / "checkpoints" / "latest.pt")
    assert G.config.n_edits == K and G.config.condition == "modulation"
    resumed = train(train_opts(multi_pairs, run, max_steps=3), resume=True, given={"max_steps"})
    assert resumed.status in ("max_steps", "finished")
    G = load_generator(run / "checkpoints" / "latest.pt")
    out = tmp_path / "zoo" / "multi"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(
            [
                "export",
                str(run),
                "--out",
                str(out),
                "--variants",
                "int8",
                "--timing-repeats",
                "0",
                "--num-calibration",
                "6",
                "--num-eval",
                "2",
                "--min-variant-psnr",
                "0",
            ]
        )
    assert code == 0
    spec = get_entry(out.name, out.parent).spec
    assert spec.strength is None and [e.attribute for e in spec.edits] == ["age", "smile", "glasses"]
    assert [e.range for e in spec.edits] == [(-1.0, 1.0), (0.0, 1.5), (-1.0, 1.0)]
    assert all(
        e.default == 0.0 and e.alpha == 1.0 and e.direction == f"edit_{e.attribute}.npy" for e in spec.edits
    )
    assert "strength vectors of 3 edits" in spec.variants["int8"].calibration_method
    assert spec.export is not None and spec.export["parity_zero_strength_max_abs_diff"] == 0.0
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    s = np.array([[0.5, 0, -1], [0, 1.5, 0]], np.float32)
    with torch.no_grad():
        ref = G(torch.from_numpy(x), torch.from_numpy(s)).numpy()
    assert np.abs(run_session(cpu_session(out / "model.onnx"), x, 2, s) - ref).max() < 1e-4
    from app.config import Settings
    from app.runtime import load_runtime

    runtime = load_runtime(get_entry(out.name, out.parent), Settings(engine="onnxruntime", provider="cpu"))
    runtime.check_contract()  # the service serves it, strength [N, 3] in the manifest's order
    assert np.abs(runtime.run(x, s) - ref).max() < 1e-4


@pytest.mark.filterwarnings("ignore:.*no filter has run")
def test_a_plain_student_refuses_multi_edit_pairs(multi_pairs, tmp_path):
    from training.trainer import train

    with pytest.raises(DistillError, match=r"multi-edit dataset .*--condition plane\|modulation"):
        train(train_opts(multi_pairs, tmp_path / "run", max_steps=1), {"residual": True})


@pytest.mark.filterwarnings("ignore:.*no filter has run")
def test_one_named_edit_trains_and_exports_as_a_one_edit_dial(pair_teacher, multi_pairs, tmp_path):
    from training.trainer import train

    pairs = tmp_path / "pairs"
    edit = PairEdit("smile", multi_pairs.parent / "smile.npy", alpha=2.0, range=RANGES[1])
    generate_pairs(pair_teacher[0], None, pairs, edits=[edit], num=8, device="cpu", progress=False)
    run = tmp_path / "run"
    train(train_opts(pairs, run), {"residual": True, "condition": "plane", "lambda_l1": 10.0})
    assert load_generator(run / "checkpoints" / "latest.pt").config.n_edits == 1
    out = tmp_path / "zoo" / "smile"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["export", str(run), "--out", str(out), "--timing-repeats", "0", "--num-eval", "2"]) == 0
    spec = get_entry(out.name, out.parent).spec
    assert spec.strength is not None and spec.strength.range == (0.0, 1.5) and spec.strength.default == 1.0
    assert spec.edit.attribute == "smile" and spec.edit.alpha == 2.0 and spec.direction is not None
    assert [i.name for i in cpu_session(out / "model.onnx").get_inputs()] == ["input", "strength"]
    assert len(spec.edits) == 1 and spec.edits[0].range == (0.0, 1.5)
