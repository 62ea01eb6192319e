"""The legacy projection path (editing/projector.py) on a tiny random StyleGAN2 generator."""

from __future__ import annotations

import threading

import pytest
import torch

from core.errors import DistillError
from editing.projector import (
    ProjectionStopped,
    VGG16Features,
    learning_rate,
    legacy_edit,
    project,
    render,
    w_noise_scale,
    w_stats,
)
from networks.stylegan2 import Generator
from training.metrics import psnr

W_SAMPLES = 1000


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the tiny networks gain nothing from more, and the CI cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def G() -> Generator:
    torch.manual_seed(0)
    return (
        Generator(z_dim=16, w_dim=32, img_resolution=16, channels={4: 32, 8: 32, 16: 16}, mapping_layers=2)
        .eval()
        .requires_grad_(False)
    )


@pytest.fixture(scope="module")
def target(G: Generator) -> torch.Tensor:
    with torch.no_grad():
        return G(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3)))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_projection_reconstructs_a_sample_of_the_generator(G, target):
    result = project(G, target, steps=100, w_avg_samples=W_SAMPLES)
    assert result.ws.shape == (1, G.num_ws, G.w_dim)
    assert torch.equal(result.ws[:, :1].expand_as(result.ws), result.ws), "one w tiled to every layer"
    assert len(result.losses) == 100
    assert sorted(result.noise) == sorted(
        n for n, _ in G.synthesis.named_buffers() if n.endswith("noise_const")
    )
    w_avg, _ = w_stats(G, W_SAMPLES)
    with torch.no_grad():
        baseline = psnr(G.synthesis(w_avg.repeat(1, G.num_ws, 1), noise_mode="const"), target).item()
    projected = psnr(render(G, result.ws, result.noise), target).item()
    assert projected > baseline + 6.0, (projected, baseline)
    assert sum(result.losses[-10:]) < sum(result.losses[:10])


def test_generator_is_left_untouched(G, target):
    before = snapshot(G)
    project(G, target, steps=5, w_avg_samples=W_SAMPLES)
    legacy_edit(
        G, target, torch.ones(G.num_ws, G.w_dim), alpha=1.0, layers=(0, 3), steps=5, w_avg_samples=W_SAMPLES
    )
    after = snapshot(G)
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert not any(p.requires_grad for p in G.parameters())
    assert not any(b.requires_grad for b in G.buffers())


def test_same_seed_same_result_also_when_run_concurrently(G, target):
    sequential = project(G, target, steps=15, seed=7, w_avg_samples=W_SAMPLES).ws
    results: dict[int, torch.Tensor] = {}

    def worker(i: int) -> None:
        results[i] = project(G, target, steps=15, seed=7, w_avg_samples=W_SAMPLES).ws

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.allclose(results[0], sequential, atol=1e-5)
    assert torch.allclose(results[1], sequential, atol=1e-5)
    other_seed = project(G, target, steps=15, seed=8, w_avg_samples=W_SAMPLES).ws
    assert not torch.allclose(other_seed, sequential, atol=1e-5)


def test_should_stop_aborts_and_progress_reports(G, target):
    calls: list[tuple[int, int, float]] = []
    polls = iter(range(100))
    with pytest.raises(ProjectionStopped) as info:
        project(
            G,
            target,
            steps=50,
            w_avg_samples=W_SAMPLES,
            should_stop=lambda: next(polls) >= 4,
            progress=lambda step, steps, loss: calls.append((step, steps, loss)),
        )
    assert info.value.step == 4
    assert [c[:2] for c in calls] == [(1, 50), (2, 50), (3, 50), (4, 50)]


def test_legacy_edit_applies_the_direction(G, target):
    direction = torch.randn(G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(1))
    edited = legacy_edit(G, target, direction, alpha=2.0, layers=(0, 4), steps=10, w_avg_samples=W_SAMPLES)
    unedited = legacy_edit(G, target, direction, alpha=0.0, layers=(0, 4), steps=10, w_avg_samples=W_SAMPLES)
    assert edited.shape == (1, 3, 16, 16)
    reference = project(G, target, steps=10, w_avg_samples=W_SAMPLES)
    assert torch.allclose(unedited, render(G, reference.ws, reference.noise), atol=1e-5)
    assert (edited - unedited).abs().mean() > 1e-3


def test_bad_target_and_steps_are_user_errors(G, target):
    with pytest.raises(DistillError, match="shape"):
        project(G, target[:, :, :8, :8], steps=2)
    with pytest.raises(DistillError, match="steps"):
        project(G, target, steps=0)


def test_perceptual_distance_with_local_vgg16_weights(G, target, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "vgg16.pth"
    torch.save({k: v for k, v in VGG16Features().state_dict().items() if k.startswith("features.")}, path)
    result = project(G, target, steps=3, vgg16_path=path, w_avg_samples=W_SAMPLES)
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(DistillError, match="VGG16"):
        project(G, target, steps=1, vgg16_path=tmp_path / "other.pth", w_avg_samples=W_SAMPLES)
    with pytest.raises(DistillError, match="no such file"):
        project(G, target, steps=1, vgg16_path=tmp_path / "missing.pth", w_avg_samples=W_SAMPLES)


def test_schedules_follow_nvlabs():
    assert learning_rate(0, 1000, 0.1) == 0.0
    assert learning_rate(50, 1000, 0.1) == pytest.approx(0.1)
    assert learning_rate(500, 1000, 0.1) == pytest.approx(0.1)
    assert learning_rate(875, 1000, 0.1) == pytest.approx(0.05)
    assert learning_rate(999, 1000, 0.1) < 1e-4
    assert w_noise_scale(0, 1000, 2.0) == pytest.approx(0.1)
    assert w_noise_scale(375, 1000, 2.0) == pytest.approx(0.025)
    assert w_noise_scale(750, 1000, 2.0) == 0.0
