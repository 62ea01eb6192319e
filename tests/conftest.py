"""Shared test fixtures: the read-only reference material in ../shared and small torch settings."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DISTILL_SHARED", REPO.parent / "shared"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """../shared/fixtures: outputs of the official StyleGAN2 and pix2pixHD code (see its README).

    Missing: the conformance tests skip with one reason outside CI and fail under ``CI=true``."""
    path = SHARED / "fixtures"
    if not path.is_dir():
        reason = (
            f"conformance fixtures not found at {path} (put ../shared beside the clone or set DISTILL_SHARED)"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; CI requires them")
        pytest.skip(reason)
    return path


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest on one thread (and the test machine's two cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def pair_teacher(tmp_path_factory) -> tuple[str, str]:
    """A tiny random 16 px teacher and a direction for it (the pair-generation tests' teacher)."""
    import numpy as np

    from networks.stylegan2 import Generator, save_generator

    root = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    G = Generator(z_dim=32, w_dim=32, img_resolution=16, mapping_layers=2, channels={4: 16, 8: 16, 16: 8})
    save_generator(G, root / "g.pt")
    np.save(root / "d.npy", np.random.default_rng(0).standard_normal(32).astype(np.float32))
    return str(root / "g.pt"), str(root / "d.npy")


@pytest.fixture(scope="session")
def strength_pairs(pair_teacher, tmp_path_factory) -> Path:
    """Eight 16 px pairs over strengths -1.5:1.5 (``distill pairs --alpha-range``), unfiltered."""
    from training.pairs import generate_pairs
    from training.strength import StrengthRange

    out = tmp_path_factory.mktemp("strength") / "pairs"
    generate_pairs(
        *pair_teacher,
        out,
        alpha=1.0,
        num=8,
        device="cpu",
        progress=False,
        alpha_range=StrengthRange(-1.5, 1.5),
    )
    return out


@pytest.fixture(scope="session")
def conditional_entry(strength_pairs, tmp_path_factory) -> Path:
    """A model-zoo entry of a tiny strength-conditioned student (plane, 2 steps on ``strength_pairs``), fp32 + int8,
    with the teacher and direction: the export, service and evaluate tests' conditional model."""
    import warnings

    from distill.cli import main
    from training.trainer import TrainOptions, train

    root = tmp_path_factory.mktemp("conditional")
    opts = TrainOptions(
        dataset=str(strength_pairs),
        out=str(root / "run"),
        preset="tiny",
        batch_size=2,
        max_steps=2,
        workers=0,
        progress=False,
        device="cpu",
        val_fraction=0.25,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(opts, {"residual": True, "condition": "plane", "lambda_l1": 10.0})
    out = root / "zoo" / "cond"
    assert (
        main(
            [
                "export",
                str(root / "run"),
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
        == 0
    )
    return out


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (the demo-page tests, pytest -m browser); skips without selenium."""
    from tests.app_helpers import CHROMEDRIVER, CHROMIUM

    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e .[dev])")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,900",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


class Unprivileged:
    """Permission bits that hold even when the tests run as root (root reads and writes anything): ``root`` is a
    fresh folder every user may enter, and code run inside ``with self.run():`` runs with nobody's effective
    uid, so a file or folder made unreadable or unwritable there is what it would be for any user."""

    NOBODY = 65534

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextmanager
    def run(self) -> Iterator[None]:
        if os.geteuid() != 0:
            yield
            return
        os.seteuid(self.NOBODY)
        try:
            yield
        finally:
            os.seteuid(0)


@pytest.fixture
def unprivileged() -> Iterator[Unprivileged]:
    root = Path(tempfile.mkdtemp(prefix="distill-perms-"))
    root.chmod(0o755)
    try:
        yield Unprivileged(root)
    finally:
        for path in [root, *root.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(root)
