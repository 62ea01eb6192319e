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

from core.errors import DistillError
from networks.stylegan2 import load_generator
from networks.stylegan2.safe_pickle import safe_load


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
    for name, module in [
        ("torch_utils", torch_utils),
        ("torch_utils.persistence", persistence),
        ("dnnlib", dnnlib),
        ("dnnlib.util", util),
    ]:
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=easy_dict)


class Persistent:
    """Pickles like an NVlabs persistent class: ``_reconstruct_persistent_obj(meta)``, source embedded."""

    def __init__(self, reconstruct, class_name: str, state: dict, module_src: str):
        self.reconstruct, self.class_name, self.state, self.module_src = (
            reconstruct,
            class_name,
            state,
            module_src,
        )

    def __reduce__(self):
        meta = dict(
            type="class", version=4, module_src=self.module_src, class_name=self.class_name, state=self.state
        )
        return self.reconstruct, (meta,)


def persistent_tree(module: torch.nn.Module, reconstruct, module_src: str, class_name: str) -> Persistent:
    """Mirror a real module's ``__dict__`` (hooks, sets, attributes), children as persistent records."""
    state = dict(module.__dict__)
    state["_modules"] = OrderedDict(
        (name, persistent_tree(child, reconstruct, module_src, type(child).__name__))
        for name, child in module._modules.items()
    )
    return Persistent(reconstruct, class_name, state, module_src)


@pytest.fixture(scope="module")
def fixture_generator(fixtures_dir):
    folder = fixtures_dir / "nvlabs_stylegan2_ada"
    import json

    return (
        load_generator(folder / "G_state_dict.pt"),
        dict(np.load(folder / "io.npz")),
        json.loads((folder / "config.json").read_text())["init_kwargs"],
    )


def write_network_pickle(path, fixture_generator, fakes, marker, protocol):
    G, _, init_kwargs = fixture_generator
    src = f"open({str(marker)!r}, 'w').write('embedded source was executed')\n"
    kwargs = dict(
        init_kwargs,
        mapping_kwargs=fakes.EasyDict(init_kwargs["mapping_kwargs"]),
        synthesis_kwargs=fakes.EasyDict(init_kwargs["synthesis_kwargs"]),
    )
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
        "D": persistent_tree(
            torch.nn.Sequential(torch.nn.Linear(3, 2)), fakes.reconstruct, src, "Discriminator"
        ),
        "G_ema": g_ema,
        "augment_pipe": persistent_tree(augment, fakes.reconstruct, src, "AugmentPipe"),
        "training_set_kwargs": fakes.EasyDict(
            class_name="training.dataset.ImageFolderDataset",
            path="faces.zip",
            use_labels=False,
            max_size=None,
            xflip=False,
            resolution=32,
        ),
    }
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4])
def test_network_pickle_loads_g_ema_without_running_code(
    tmp_path, nvlabs_modules, fixture_generator, protocol
):
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
        for key, kwargs in [
            ("img_psi1", {}),
            ("img_psi", {"truncation_psi": float(io["truncation_psi"])}),
            ("img_noise_none", {"noise_mode": "none"}),
        ]:
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
        "nested": lambda: {
            "G_ema": Persistent(
                nvlabs_modules.reconstruct,
                "Generator",
                {"_parameters": {}, "_modules": {"x": SystemCall(marker)}},
                "",
            )
        },
        "storage": lambda: {"G_ema": StorageBytes(pickle.dumps(SystemCall(marker)))},
    }[kind]()
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(DistillError) as err:
        load_generator(path)
    assert not marker.exists()
    expected = {
        "system": "posix.system",
        "eval": "builtins.eval",
        "exec": "builtins.exec",
        "nested": "posix.system",
        "storage": "weights_only",
    }[kind]
    assert expected in str(err.value) and str(path) in str(err.value)


def test_safe_load_keeps_plain_values(tmp_path):
    value = {
        "a": [1, 2.5, "x", None, (True,)],
        "b": OrderedDict(c={1, 2}),
        "t": torch.arange(3.0),
        "n": np.arange(4),
    }
    import io

    loaded = safe_load(io.BytesIO(pickle.dumps(value, protocol=2)))
    assert loaded["a"] == value["a"] and loaded["b"] == value["b"]
    assert torch.equal(loaded["t"], value["t"]) and np.array_equal(loaded["n"], value["n"])


def _tf_network_init(self, **state):
    self.__dict__.update(state)


def tf_variables_from_nvlabs(sd: dict[str, torch.Tensor]) -> tuple[list, list, list]:
    """(Gs top-level, mapping, synthesis) variables in TF layout: the inverse of legacy.py's rules."""

    def a(t: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.numpy())

    mapping, synthesis = [], []
    i = 0
    while f"mapping.fc{i}.weight" in sd:
        mapping += [
            (f"Dense{i}/weight", a(sd[f"mapping.fc{i}.weight"].T)),
            (f"Dense{i}/bias", a(sd[f"mapping.fc{i}.bias"])),
        ]
        i += 1
    synthesis.append(("4x4/Const/const", a(sd["synthesis.b4.const"][None])))
    res = sorted(int(k.split(".")[1][1:]) for k in sd if k.endswith(".conv1.weight"))

    def layer(src: str, tf: str, noise: int, flip: bool) -> None:
        w = sd[f"{src}.weight"].permute(2, 3, 1, 0)
        synthesis.extend(
            [
                (f"{tf}/weight", a(w.flip([0, 1]) if flip else w)),
                (f"{tf}/bias", a(sd[f"{src}.bias"])),
                (f"{tf}/mod_weight", a(sd[f"{src}.affine.weight"].T)),
                (f"{tf}/mod_bias", a(sd[f"{src}.affine.bias"] - 1)),
                (f"{tf}/noise_strength", a(sd[f"{src}.noise_strength"])),
                (f"noise{noise}", a(sd[f"{src}.noise_const"][None, None])),
            ]
        )

    def torgb(src: str, tf: str) -> None:
        synthesis.extend(
            [
                (f"{tf}/weight", a(sd[f"{src}.weight"].permute(2, 3, 1, 0))),
                (f"{tf}/bias", a(sd[f"{src}.bias"])),
                (f"{tf}/mod_weight", a(sd[f"{src}.affine.weight"].T)),
                (f"{tf}/mod_bias", a(sd[f"{src}.affine.bias"] - 1)),
            ]
        )

    for r in res:
        k = int(np.log2(r))
        if r == 4:
            layer("synthesis.b4.conv1", "4x4/Conv", 0, flip=False)
        else:
            layer(f"synthesis.b{r}.conv0", f"{r}x{r}/Conv0_up", 2 * k - 5, flip=True)
            layer(f"synthesis.b{r}.conv1", f"{r}x{r}/Conv1", 2 * k - 4, flip=False)
        torgb(f"synthesis.b{r}.torgb", f"{r}x{r}/ToRGB")
    return [("dlatent_avg", a(sd["mapping.w_avg"]))], mapping, synthesis


def test_tensorflow_pickle_converts_like_legacy_py(tmp_path, nvlabs_modules, fixture_generator, monkeypatch):
    G, io, init_kwargs = fixture_generator
    network_mod = types.ModuleType("dnnlib.tflib.network")
    # Pickles like TF dnnlib's ``Network``: NEWOBJ + BUILD with the network's state dict.
    network_cls = type(
        "Network",
        (),
        {"__module__": "dnnlib.tflib.network", "__qualname__": "Network", "__init__": _tf_network_init},
    )
    network_mod.Network = network_cls
    monkeypatch.setitem(sys.modules, "dnnlib.tflib", types.ModuleType("dnnlib.tflib"))
    monkeypatch.setitem(sys.modules, "dnnlib.tflib.network", network_mod)
    marker = tmp_path / "executed"
    src = f"open({str(marker)!r}, 'w').write('x')\n"
    top, mapping, synthesis = tf_variables_from_nvlabs(G.state_dict())

    def net(name, variables, components=None, **static_kwargs):
        return network_cls(
            version=4,
            name=name,
            static_kwargs=nvlabs_modules.EasyDict(static_kwargs),
            components=nvlabs_modules.EasyDict(components or {}),
            build_module_src=src,
            build_func_name=f"training.networks_stylegan2.{name}",
            variables=variables,
        )

    def generator(scale: float):
        scaled = lambda vs: [(n, v * scale) for n, v in vs]  # noqa: E731
        return net(
            "G",
            scaled(top),
            {
                "mapping": net("G_mapping", scaled(mapping)),
                "synthesis": net("G_synthesis", scaled(synthesis)),
            },
            latent_size=init_kwargs["z_dim"],
            dlatent_size=init_kwargs["w_dim"],
            resolution=init_kwargs["img_resolution"],
            mapping_lrmul=0.01,
        )

    path = tmp_path / "stylegan2-tf.pkl"
    path.write_bytes(pickle.dumps((generator(0.0), net("D", []), generator(1.0)), protocol=3))
    for name in ("dnnlib", "dnnlib.util", "dnnlib.tflib", "dnnlib.tflib.network"):
        sys.modules.pop(name, None)
    T = load_generator(path)
    assert not marker.exists()
    assert T.checkpoint_info["format"] == "tensorflow-pkl"
    assert T.init_kwargs == G.init_kwargs
    z = torch.from_numpy(io["z"])
    with torch.no_grad():
        np.testing.assert_allclose(
            T(z, truncation_psi=float(io["truncation_psi"])).numpy(), io["img_psi"], atol=1e-4, rtol=0
        )
