"""NVlabs network pickles: a realistic one loads (G_ema, fixture images reproduced) without running
its embedded source; crafted pickles that try to run code are refused before anything runs."""

from __future__ import annotations

import builtins
import copy
import os
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch

from training.errors import DistillError
from training.stylegan2 import load_generator
from training.stylegan2.safe_pickle import safe_load


@pytest.fixture()
def nvlabs_modules(monkeypatch):
    """Fake ``torch_utils.persistence`` and ``dnnlib.util`` importable while the test pickles."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("the loader must never call NVlabs' reconstruct function")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    torch_utils = types.ModuleType("torch_utils")
    torch_utils.persistence = persistence
    util = types.ModuleType("dnnlib.util")
    easy_dict = type("EasyDict", (dict,), {"__module__": "dnnlib.util", "__qualname__": "EasyDict"})
    util.EasyDict = easy_dict
    dnnlib = types.ModuleType("dnnlib")
    dnnlib.util = util
    for name, module in [("torch_utils", torch_utils), ("torch_utils.persistence", persistence),
                         ("dnnlib", dnnlib), ("dnnlib.util", util)]:
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=easy_dict)


class Persistent:
    """Pickles like an NVlabs persistent class: ``_reconstruct_persistent_obj(meta)``, source embedded."""

    def __init__(self, reconstruct, class_name: str, state: dict, module_src: str):
        self.reconstruct, self.class_name, self.state, self.module_src = reconstruct, class_name, state, module_src

    def __reduce__(self):
        meta = dict(type="class", version=4, module_src=self.module_src, class_name=self.class_name,
                    state=self.state)
        return self.reconstruct, (meta,)


def persistent_tree(module: torch.nn.Module, reconstruct, module_src: str, class_name: str) -> Persistent:
    """Mirror a real module's ``__dict__`` (hooks, sets, attributes), children as persistent records."""
    state = dict(module.__dict__)
    state["_modules"] = OrderedDict(
        (name, persistent_tree(child, reconstruct, module_src, type(child).__name__))
        for name, child in module._modules.items())
    return Persistent(reconstruct, class_name, state, module_src)


@pytest.fixture(scope="module")
def fixture_generator(fixtures_dir):
    folder = fixtures_dir / "nvlabs_stylegan2_ada"
    import json
    return (load_generator(folder / "G_state_dict.pt"), dict(np.load(folder / "io.npz")),
            json.loads((folder / "config.json").read_text())["init_kwargs"])


def write_network_pickle(path, fixture_generator, fakes, marker, protocol):
    G, _, init_kwargs = fixture_generator
    src = f"open({str(marker)!r}, 'w').write('embedded source was executed')\n"
    kwargs = dict(init_kwargs, mapping_kwargs=fakes.EasyDict(init_kwargs["mapping_kwargs"]),
                  synthesis_kwargs=fakes.EasyDict(init_kwargs["synthesis_kwargs"]))
    g_ema = persistent_tree(G, fakes.reconstruct, src, "Generator")
    g_ema.state.update(_init_args=(), _init_kwargs=kwargs)
    g_train = copy.deepcopy(G)
    with torch.no_grad():
        for p in g_train.parameters():
            p.zero_()
    augment = torch.nn.Module()
    augment.register_buffer("p", torch.tensor(0.2))
    data = {
        "G": persistent_tree(g_train, fakes.reconstruct, src, "Generator"),
        "D": persistent_tree(torch.nn.Sequential(torch.nn.Linear(3, 2)), fakes.reconstruct, src, "Discriminator"),
        "G_ema": g_ema,
        "augment_pipe": persistent_tree(augment, fakes.reconstruct, src, "AugmentPipe"),
        "training_set_kwargs": fakes.EasyDict(class_name="training.dataset.ImageFolderDataset", path="faces.zip",
                                              use_labels=False, max_size=None, xflip=False, resolution=32),
    }
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4])
def test_network_pickle_loads_g_ema_without_running_code(tmp_path, nvlabs_modules, fixture_generator, protocol):
    marker = tmp_path / "executed.txt"
    path = tmp_path / "network-snapshot-000000.pkl"
    write_network_pickle(path, fixture_generator, nvlabs_modules, marker, protocol)
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        del sys.modules[name]  # loading must not need NVlabs' code
    G = load_generator(path)
    assert not marker.exists()
    assert G.checkpoint_info["format"] == "nvlabs-pkl"
    _, io, init_kwargs = fixture_generator
    assert G.num_ws == int(io["num_ws"]) and G.img_resolution == init_kwargs["img_resolution"]
    z = torch.from_numpy(io["z"])
    with torch.no_grad():
        for key, kwargs in [("img_psi1", {}), ("img_psi", {"truncation_psi": float(io["truncation_psi"])}),
                            ("img_noise_none", {"noise_mode": "none"})]:
            np.testing.assert_allclose(G(z, **kwargs).numpy(), io[key], atol=1e-4, rtol=0)


def test_network_pickle_conv_clamp_comes_from_init_kwargs(tmp_path, nvlabs_modules, fixture_generator):
    G, _, init_kwargs = fixture_generator
    clamped = dict(init_kwargs, synthesis_kwargs=dict(init_kwargs["synthesis_kwargs"], conv_clamp=256))
    path = tmp_path / "net.pkl"
    write_network_pickle(path, (G, None, clamped), nvlabs_modules, tmp_path / "m", protocol=4)
    assert load_generator(path).init_kwargs["conv_clamp"] == 256
    assert load_generator(path, conv_clamp=None).init_kwargs["conv_clamp"] is None


class SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class EvalCall:
    def __init__(self, marker, fn=builtins.eval):
        self.marker, self.fn = marker, fn

    def __reduce__(self):
        code = f"open({str(self.marker)!r}, 'w').write('pwned')"
        return self.fn, (code,)


class StorageBytes:
    """A 'tensor storage' whose bytes are themselves a code-running pickle (torch.load(weights_only=False) bait)."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def __reduce__(self):
        from torch.storage import _load_from_bytes
        return _load_from_bytes, (self.payload,)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["system", "eval", "exec", "nested", "storage"])
def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path, nvlabs_modules, kind):
    marker = tmp_path / "pwned"
    payload = {
        "system": lambda: SystemCall(marker),
        "eval": lambda: EvalCall(marker),
        "exec": lambda: EvalCall(marker, builtins.exec),
        "nested": lambda: {"G_ema": Persistent(nvlabs_modules.reconstruct, "Generator",
                                               {"_parameters": {}, "_modules": {"x": SystemCall(marker)}}, "")},
        "storage": lambda: {"G_ema": StorageBytes(pickle.dumps(SystemCall(marker)))},
    }[kind]()
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(DistillError) as err:
        load_generator(path)
    assert not marker.exists()
    expected = {"system": "posix.system", "eval": "builtins.eval", "exec": "builtins.exec",
                "nested": "posix.system", "storage": "weights_only"}[kind]
    assert expected in str(err.value) and str(path) in str(err.value)


def test_safe_load_keeps_plain_values(tmp_path):
    value = {"a": [1, 2.5, "x", None, (True,)], "b": OrderedDict(c={1, 2}), "t": torch.arange(3.0),
             "n": np.arange(4)}
    import io
    loaded = safe_load(io.BytesIO(pickle.dumps(value, protocol=2)))
    assert loaded["a"] == value["a"] and loaded["b"] == value["b"]
    assert torch.equal(loaded["t"], value["t"]) and np.array_equal(loaded["n"], value["n"])
