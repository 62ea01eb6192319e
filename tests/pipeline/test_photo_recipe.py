"""The README's recipe "For real photographs", run as written (at tiny sizes) from a folder outside the
repository, on an NVlabs-format network pickle made from the conformance fixtures: it cannot drift from the code."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from distill.cli import main
from networks.stylegan2 import load_generator
from tests.app_helpers import free_port
from tests.pipeline_helpers import scorer_onnx
from tests.unit.test_stylegan2_pickle import nvlabs_modules, write_network_pickle  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parents[2]

# What makes the recipe tiny here, each applied to the README's text (every one must still match it):
SMALLER = [
    ("--input-size 224", "--input-size 16"),  # the test scorer's input
    ("--num 2000", "--num 32 --device cpu"),
    ("--num 30000", "--num 12 --device cpu"),
    ("--face-detector ", ""),  # a 32 px random teacher draws no face OpenCV would find
    ("--keep age=18:65", "--keep age=-1:1"),  # the test scorer's column 0 is mean brightness in [-1, 1]
    (
        "--preset global --vgg19 vgg19-dcbb9e9d.pth",
        "--preset tiny --max-steps 2 --batch-size 2 --workers 0 --device cpu --no-progress",
    ),
    ("--out reports/age", "--out reports/age --num 4 --legacy-num 0 --timing-num 2"),
]


def readme_commands(section: str) -> list[str]:
    """The commands of every bash block in the README section titled ``section``, continuation lines joined and
    comments dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body = text.split(f"### {section}\n", 1)[1].split("\n#", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", body, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ", 1)[0].strip()
            if line:
                commands.append(re.sub(r"\s+", " ", line))
    return commands


def smaller(commands: list[str]) -> list[str]:
    text = "\n".join(commands)
    for old, new in SMALLER:
        assert old in text, f"the README's recipe no longer has {old!r}: update SMALLER in this test"
        text = text.replace(old, new)
    return text.splitlines()


@pytest.fixture
def user_folder(tmp_path, monkeypatch, fixtures_dir, nvlabs_modules) -> Path:  # noqa: F811
    """A folder outside the repository holding the user's files under the README's names."""
    folder = fixtures_dir / "nvlabs_stylegan2_ada"
    generator = (
        load_generator(folder / "G_state_dict.pt"),
        None,
        json.loads((folder / "config.json").read_text())["init_kwargs"],
    )
    write_network_pickle(
        tmp_path / "stylegan2-ffhq-config-f.pkl", generator, nvlabs_modules, tmp_path / "ran", protocol=4
    )
    scorer_onnx(tmp_path / "age.onnx", res=16)
    assert not tmp_path.resolve().is_relative_to(REPO)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISTILL_MODEL_ZOO", raising=False)
    return tmp_path


def serve_models(argv: list[str], env: dict[str, str], cwd: Path) -> dict:
    """Start the README's `distill serve` line in ``cwd`` on a free port; its /models once ready."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "DISTILL_MODEL_ZOO")}
    full |= {"PYTHONPATH": str(REPO), "DISTILL_WARMUP_RUNS": "1", **env}
    cmd = [sys.executable, "-m", "distill", *argv[1:], "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    return httpx.get(f"http://127.0.0.1:{port}/models", timeout=5).json()
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"distill serve not ready (exit {proc.poll()})")
    finally:
        proc.terminate()
        output = proc.communicate(timeout=60)[0]
        assert "leaked semaphore" not in output, output


@pytest.mark.usefixtures("one_torch_thread")
def test_the_photo_recipe_runs_as_written_from_a_users_folder(user_folder: Path, capsys) -> None:
    commands = smaller(readme_commands("For real photographs"))
    served = False
    for line in commands:
        words = shlex.split(line)
        env = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
        argv = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
        assert argv[0] == "distill", line
        if argv[1] == "serve":
            models = serve_models(argv, env, user_folder)
            (info,) = models["models"]
            assert info["name"] == "age" and info["alignment"] == "ffhq"
            assert info["zoo"] == str(user_folder / "model_zoo")
            served = True
            continue
        if argv[1:3] == ["direction", "fit"] and "--scores" in argv:  # the user's own scores of the images
            with open("faces/seeds.csv", newline="") as f, open("ages.csv", "w") as out:
                out.write("seed,age,gender\n")
                out.writelines(
                    f"{row['seed']},{int(row['seed']) % 7},{int(row['seed']) % 2}\n"
                    for row in csv.DictReader(f)
                )
        assert main(argv[1:]) == 0, f"{line}\n{capsys.readouterr().err}"
        out = capsys.readouterr()
        if argv[1] == "filter":
            assert "warning" not in out.err
    assert served
    assert json.loads(Path("model_zoo/age/manifest.json").read_text())["input"]["alignment"] == "ffhq"
    assert (user_folder / "data/age/filter_report.md").is_file()
    report = Path("reports/age/report.md").read_text()
    assert "no overlap" in report  # the training data found from the entry, outside the project
    assert Path("age.npy").is_file() and len(list(Path("faces").glob("seed*.png"))) == 32
