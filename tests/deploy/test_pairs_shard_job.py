"""`distill pairs` in a Kubernetes Indexed Job: the shard comes from JOB_COMPLETION_INDEX when --shard is absent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import DistillError
from core.sharding import resolve_shard
from distill.cli import main
from networks.stylegan2 import Generator, save_generator
from training.manifest import read_manifest


@pytest.mark.parametrize(
    ("shard", "num_shards", "env", "expected"),
    [
        (None, None, {}, (0, 1)),
        (None, None, {"JOB_COMPLETION_INDEX": "2", "DISTILL_NUM_SHARDS": "4"}, (2, 4)),
        (None, 4, {"JOB_COMPLETION_INDEX": "3"}, (3, 4)),
        (1, 2, {"JOB_COMPLETION_INDEX": "3", "DISTILL_NUM_SHARDS": "8"}, (1, 2)),  # the options win
        (1, None, {"DISTILL_NUM_SHARDS": "3"}, (1, 3)),
    ],
)
def test_the_shard_comes_from_the_options_else_the_job(shard, num_shards, env, expected):
    assert resolve_shard(shard, num_shards, env) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOB_COMPLETION_INDEX": "2"}, "set DISTILL_NUM_SHARDS"),
        (
            {"JOB_COMPLETION_INDEX": "two", "DISTILL_NUM_SHARDS": "4"},
            "JOB_COMPLETION_INDEX='two' is not an integer",
        ),
    ],
)
def test_an_incomplete_job_environment_is_one_clear_error(env, message):
    with pytest.raises(DistillError, match=message):
        resolve_shard(None, None, env)


def test_pairs_in_an_indexed_job_pod_makes_its_shard(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=8, mapping_layers=1, channels={4: 8, 8: 8})
    save_generator(G, tmp_path / "g.pt")
    np.save(tmp_path / "d.npy", np.ones(16, np.float32))
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("DISTILL_NUM_SHARDS", "3")
    out = tmp_path / "pairs"
    assert (
        main(
            [
                "pairs",
                "--generator",
                str(tmp_path / "g.pt"),
                "--direction",
                str(tmp_path / "d.npy"),
                "--num",
                "7",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert sorted(row.seed for row in read_manifest(out)) == [1, 4]

    monkeypatch.setenv("JOB_COMPLETION_INDEX", "5")
    assert (
        main(
            [
                "pairs",
                "--generator",
                str(tmp_path / "g.pt"),
                "--direction",
                str(tmp_path / "d.npy"),
                "--num",
                "7",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "need 0 <= shard < num-shards" in capsys.readouterr().err


def test_pairs_help_says_where_the_shard_comes_from(capsys):
    with pytest.raises(SystemExit):
        main(["pairs", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "JOB_COMPLETION_INDEX" in text and "DISTILL_NUM_SHARDS" in text and "Indexed Job" in text
