"""The toy-face attribute model: a small CNN that reads the renderer's attributes and a face/quality score.

It is this domain's stand-in for the seed system's face API: `distill filter` uses it (through the
generic ONNX scorer) to keep adults and reject artifacts, and direction fitting uses it as the
labeller. Input: RGB float32 NCHW at 64x64, ``x = pixels / 127.5 - 1`` (``(x/255 - 0.5) / 0.5``),
resized from any size with PIL bilinear. One output ``scores`` [N, 10], every column in [0, 1]:
the 9 attributes of :data:`~training.toyfaces.renderer.ATTRIBUTES` (``glasses`` is the probability
that glasses are drawn) then ``quality`` (probability that the image is a clean, whole face).

The quality head is trained on clean renders (lightly softened and noised, so a slightly blurry
teacher sample still counts as a face) against corrupted ones: blotches, heavy blur, noise
patches, channel swaps, faces pushed partly out of frame, empty backgrounds, ghosted double faces,
warps and scrambled patches: the artifacts a half-trained generator makes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageFilter
from tqdm import tqdm

from core.atomic import atomic_write_bytes, atomic_write_json
from core.errors import DistillError
from training.toyfaces.renderer import ATTRIBUTES, GLASSES_THRESHOLD, NUM_ATTRIBUTES, render, sample_params

INPUT_SIZE = 64
OUTPUT_NAMES = (*ATTRIBUTES, "quality")
QUALITY_INDEX = len(ATTRIBUTES)
GLASSES_INDEX = ATTRIBUTES.index("glasses")
ADULT_AGE = 0.2  # age is about 5 + 80 * age years; 0.2 is about 21 years
ONNX_NAME = "attributes.onnx"
CARD_NAME = "attributes.json"
HELD_OUT_SEED0 = 10_000_000  # held-out faces use seeds from here; training uses seeds below it


class AttributeNet(nn.Module):
    """64 px RGB in [-1,1] -> [N, 10] scores in [0, 1]: 9 attributes then the quality probability.

    Plain stride-2 convolutions with no normalisation layers, so the exported ONNX keeps every
    parameter under its PyTorch name and :func:`load_torch` can rebuild the module from it.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 48, 64, 80), hidden: int = 64) -> None:
        super().__init__()
        self.channels = tuple(channels)
        convs, c_in = [], 3
        for c in channels:
            convs.append(nn.Conv2d(c_in, c, 3, stride=2, padding=1))
            c_in = c
        self.convs = nn.ModuleList(convs)
        self.fc = nn.Linear(c_in, hidden)
        self.head = nn.Linear(hidden, NUM_ATTRIBUTES + 1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations after every conv (for a perceptual loss), from fine to coarse."""
        assert x.ndim == 4 and x.shape[1] == 3, x.shape
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(
                x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True
            )
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)[-1].mean(dim=(2, 3))
        return torch.sigmoid(self.head(F.leaky_relu(self.fc(h), 0.2)))


# ----------------------------------------------------------------------------------------------------------
# Preprocessing and corruptions (numpy, uint8 HWC at the render size)


def preprocess(images: np.ndarray, resample: int = Image.BILINEAR) -> torch.Tensor:
    """uint8 [N,H,W,3] -> float32 [N,3,64,64] in [-1,1], resized as the filter's ONNX scorer does."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DistillError(
            f"attribute model input must be uint8 [N,H,W,3] RGB, got {images.dtype} {images.shape}"
        )
    out = [
        im
        if im.shape[:2] == (INPUT_SIZE, INPUT_SIZE)
        else np.asarray(Image.fromarray(im).resize((INPUT_SIZE, INPUT_SIZE), resample))
        for im in images
    ]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def _blotch(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = im.shape[:2]
    mask = np.zeros((h, w), np.float32)
    for _ in range(rng.integers(1, 4)):
        c = (int(rng.uniform(0.25, 0.75) * w), int(rng.uniform(0.25, 0.75) * h))
        axes = (int(rng.uniform(0.08, 0.2) * w), int(rng.uniform(0.06, 0.18) * h))
        cv2.ellipse(mask, c, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.02 * w))[..., None]
    colour = rng.uniform(0, 255, 3).astype(np.float32)
    return (im * (1 - mask) + colour * mask).astype(np.uint8)


def _blur(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = rng.uniform(0.025, 0.05) * im.shape[1]
    return np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(sigma)))


def _noise_patch(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out, (h, w) = im.copy(), im.shape[:2]
    for _ in range(rng.integers(1, 3)):
        ph, pw = int(rng.uniform(0.2, 0.45) * h), int(rng.uniform(0.2, 0.45) * w)
        y, x = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        out[y : y + ph, x : x + pw] = rng.integers(0, 256, (ph, pw, 3), dtype=np.uint8)
    return out


def _channel_swap(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    perms = [(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    return np.ascontiguousarray(im[..., list(perms[rng.integers(len(perms))])])


def _partial(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = im.shape[:2]
    dx, dy = rng.choice([-1, 1]) * rng.uniform(0.4, 0.6) * w, rng.uniform(-0.5, 0.5) * h
    if rng.random() < 0.5:
        dx, dy = dy, dx
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    corner = tuple(int(v) for v in im[1, 1])
    return cv2.warpAffine(
        im, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=corner
    )


def _empty(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = im.shape[:2]
    top, bottom = im[1, 1].astype(np.float32), im[1, -2].astype(np.float32)
    t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    return np.broadcast_to(top + (bottom - top) * t, (h, w, 3)).astype(np.uint8)


def _ghost(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    other = render(sample_params(int(rng.integers(2**31)), aligned=False), im.shape[0])
    a = rng.uniform(0.35, 0.65)
    return (im * a + other * (1 - a)).astype(np.uint8)


def _warp(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = im.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    amp, freq = rng.uniform(0.06, 0.12) * w, rng.uniform(1.5, 3.0) * 2 * math.pi / w
    ph = rng.uniform(0, 2 * math.pi, 2)
    mx = xx + amp * np.sin(yy * freq + ph[0])
    my = yy + amp * np.sin(xx * freq + ph[1])
    return cv2.remap(
        im, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


def _scramble(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = im.shape[:2]
    n = 4
    ph, pw = h // n, w // n
    tiles = [im[i * ph : (i + 1) * ph, j * pw : (j + 1) * pw] for i in range(n) for j in range(n)]
    order = rng.permutation(len(tiles))
    out = im.copy()
    for k, src in enumerate(order):
        i, j = divmod(k, n)
        out[i * ph : (i + 1) * ph, j * pw : (j + 1) * pw] = tiles[src]
    return out


CORRUPTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "blotch": _blotch,
    "blur": _blur,
    "noise_patch": _noise_patch,
    "channel_swap": _channel_swap,
    "partial": _partial,
    "empty": _empty,
    "ghost": _ghost,
    "warp": _warp,
    "scramble": _scramble,
}


def corrupt(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Apply one named corruption from :data:`CORRUPTIONS` to a uint8 HWC render."""
    if kind not in CORRUPTIONS:
        raise DistillError(f"corruption {kind!r}: choose one of {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[kind](image, rng)


def soften(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The clean-class augmentation: a little blur and noise, as a half-trained teacher's samples have."""
    im = image
    if rng.random() < 0.5:
        im = np.asarray(
            Image.fromarray(im).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * im.shape[1] / 128))
        )
    if rng.random() < 0.3:
        im = np.clip(im + rng.normal(0, rng.uniform(1, 4), im.shape), 0, 255).astype(np.uint8)
    return im


# ----------------------------------------------------------------------------------------------------------
# Training and evaluation


@dataclass
class AttributeTrainConfig:
    """The attribute model's training recipe (defaults: a few minutes on 2 CPU cores)."""

    train_faces: int = 8000
    epochs: int = 10
    batch: int = 64
    lr: float = 2e-3
    render_size: int = 128
    seed: int = 0
    eval_faces: int = 1000


def build_training_set(
    cfg: AttributeTrainConfig, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render ``cfg.train_faces`` faces; each gives a softened clean sample (its labels, quality 1)
    and a corrupted one (quality 0), stored at 64 px as uint8 [2N,3,64,64] to keep epochs cheap."""
    rng = np.random.default_rng(cfg.seed)
    kinds = list(CORRUPTIONS)
    resamples = [Image.BILINEAR, Image.BILINEAR, Image.BOX, Image.BICUBIC]
    n = cfg.train_faces
    x = np.empty((2 * n, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    labels = np.zeros((2 * n, NUM_ATTRIBUTES), np.float32)
    for s in tqdm(range(n), desc="render training faces", unit="face", disable=not progress):
        p = sample_params(s, aligned=False)
        im = render(p, cfg.render_size)
        for k, sample in enumerate((soften(im, rng), corrupt(im, kinds[s % len(kinds)], rng))):
            small = Image.fromarray(sample).resize(
                (INPUT_SIZE, INPUT_SIZE), resamples[rng.integers(len(resamples))]
            )
            x[2 * s + k] = np.asarray(small)
        labels[2 * s] = labels[2 * s + 1] = p.labels()
    quality = torch.tensor([1.0, 0.0]).repeat(n)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels), quality


def attribute_loss(pred: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """L1 on the continuous attributes and BCE on glasses, for clean faces only; BCE on quality for all."""
    clean = quality > 0.5
    p, y = pred[clean], labels[clean]
    cont = [i for i in range(NUM_ATTRIBUTES) if i != GLASSES_INDEX]
    loss = (p[:, cont] - y[:, cont]).abs().mean() * 4
    glasses = (y[:, GLASSES_INDEX] >= GLASSES_THRESHOLD).float()
    loss = loss + F.binary_cross_entropy(p[:, GLASSES_INDEX].clamp(1e-6, 1 - 1e-6), glasses)
    return loss + F.binary_cross_entropy(pred[:, QUALITY_INDEX].clamp(1e-6, 1 - 1e-6), quality)


def render_faces(seeds: range, size: int, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Render ``seeds`` -> (uint8 [N,size,size,3], labels [N,9])."""
    images = np.empty((len(seeds), size, size, 3), np.uint8)
    labels = np.empty((len(seeds), NUM_ATTRIBUTES), np.float32)
    for k, s in enumerate(tqdm(seeds, desc=desc, unit="face", leave=False)):
        p = sample_params(s, aligned=False)
        images[k], labels[k] = render(p, size), p.labels()
    return images, labels


def predict(
    model: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, batch: int = 256
) -> np.ndarray:
    """Scores [N,10] for uint8 images of any size (a torch module or any tensor -> tensor callable)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(np.asarray(model(preprocess(images[i : i + batch]))))
    return np.concatenate(out)


def evaluate(
    model: Callable[[torch.Tensor], torch.Tensor],
    faces: int = 1000,
    size: int = 128,
    seed0: int = HELD_OUT_SEED0,
) -> dict:
    """Held-out metrics on freshly rendered faces: MAE per attribute, glasses accuracy, quality separation."""
    images, labels = render_faces(range(seed0, seed0 + faces), size, "held-out faces")
    pred = predict(model, images)
    rng = np.random.default_rng(seed0)
    n = min(faces, 200)
    rejected = {}
    for kind in CORRUPTIONS:
        bad = np.stack([corrupt(images[i], kind, rng) for i in range(n)])
        rejected[kind] = float((predict(model, bad)[:, QUALITY_INDEX] < 0.5).mean())
    return {"faces": faces, **readability(pred, labels), "corrupted_reject_rate": rejected}


def readability(pred: np.ndarray, labels: np.ndarray) -> dict:
    """How well scores [N,10] read the true labels [N,9]: MAE per attribute, glasses/adult accuracy, quality pass rate."""
    assert pred.shape[0] == labels.shape[0] and pred.shape[1] == NUM_ATTRIBUTES + 1, (
        pred.shape,
        labels.shape,
    )
    mae = {
        a: float(np.abs(pred[:, i] - labels[:, i]).mean())
        for i, a in enumerate(ATTRIBUTES)
        if i != GLASSES_INDEX
    }
    return {
        "mae": mae,
        "glasses_accuracy": float(
            ((pred[:, GLASSES_INDEX] >= 0.5) == (labels[:, GLASSES_INDEX] >= GLASSES_THRESHOLD)).mean()
        ),
        "adult_accuracy": float(((pred[:, 0] >= ADULT_AGE) == (labels[:, 0] >= ADULT_AGE)).mean()),
        "clean_pass_rate": float((pred[:, QUALITY_INDEX] >= 0.5).mean()),
    }


def train_attribute_model(cfg: AttributeTrainConfig, progress: bool = True) -> tuple[AttributeNet, dict]:
    """Build the clean/corrupted training set, train (Adam, one-cycle lr, h-flips), return (model, info)."""
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    images, labels, quality = build_training_set(cfg, progress)
    t_data = time.perf_counter() - t0
    model = AttributeNet()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps_per_epoch = len(images) // cfg.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.1
    )
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="train attribute model", disable=not progress)
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        order = torch.randperm(len(images), generator=gen)
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch : (b + 1) * cfg.batch]
            x = images[idx].float().div(127.5).sub(1.0)
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
            loss = attribute_loss(model(x), labels[idx], quality[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    info = {
        "data_seconds": round(t_data, 1),
        "train_seconds": round(time.perf_counter() - t0 - t_data, 1),
        "final_loss": round(float(loss.detach()), 4),
        "threads": torch.get_num_threads(),
    }
    return model, info


# ----------------------------------------------------------------------------------------------------------
# ONNX export, loading and scoring


def export_onnx(model: AttributeNet, path: str | os.PathLike) -> Path:
    """Export to ONNX (opset 17, TorchScript exporter): input ``input`` [N,3,64,64], output ``scores`` [N,10]."""
    import io

    import onnx

    model = model.eval()
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE),),
        buf,
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["scores"],
        dynamic_axes={"input": {0: "batch"}, "scores": {0: "batch"}},
        do_constant_folding=False,
    )
    proto = onnx.load_from_string(buf.getvalue())
    meta = {
        "outputs": json.dumps(list(OUTPUT_NAMES)),
        "channels": json.dumps(list(model.channels)),
        "hidden": str(model.fc.out_features),
        "normalisation": "x = pixels / 127.5 - 1, RGB, NCHW",
    }
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    return atomic_write_bytes(path, proto.SerializeToString())


def load_torch(path: str | os.PathLike) -> AttributeNet:
    """Rebuild the PyTorch module from the exported ONNX (for perceptual losses); eval, no grad."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        raise DistillError(
            f"{path}: attribute model not found; create it with `distill toyfaces train-attributes`"
        )
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    if "channels" not in meta:
        raise DistillError(f"{path}: not a toy-face attribute model (no 'channels' metadata); re-export it")
    model = AttributeNet(tuple(json.loads(meta["channels"])), int(meta["hidden"]))
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in proto.graph.initializer}
    state = model.state_dict()
    missing = [k for k in state if k not in weights]
    if missing:
        raise DistillError(f"{path}: ONNX lacks parameters {missing[:3]}...; re-export with export_onnx")
    model.load_state_dict({k: weights[k] for k in state})
    model.eval().requires_grad_(False)
    return model


class AttributeScorer:
    """ONNX Runtime scorer: uint8 images of any size -> {name: [N] array} for every output column."""

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise DistillError(
                f"{self.path}: attribute model not found; create it with `distill toyfaces train-attributes`"
            )
        self.session = ort.InferenceSession(str(self.path), providers=providers or ["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        return self.session.run(["scores"], {"input": x.numpy()})[0]

    def scores(self, images: np.ndarray) -> dict[str, np.ndarray]:
        pred = predict(self, images)
        return {name: pred[:, i] for i, name in enumerate(OUTPUT_NAMES)}


def default_path() -> Path:
    """The committed model: model_zoo/toyfaces-attributes/attributes.onnx."""
    return Path(__file__).resolve().parents[2] / "model_zoo" / "toyfaces-attributes" / ONNX_NAME


def write_model_card(
    out_dir: Path, cfg: AttributeTrainConfig, info: dict, metrics: dict, command: str
) -> Path:
    """attributes.json beside the ONNX: input contract, output columns, held-out metrics, recipe."""
    onnx_path = out_dir / ONNX_NAME
    data = onnx_path.read_bytes()
    meaning = {
        "age": "0 child .. 1 elderly (about 5 + 80*age years): cheeks, grey/white hair, wrinkles, jowls",
        "smile": "0 frown .. 1 wide open laugh with teeth",
        "hair_color": "0 black .. brown .. auburn .. 1 blond (before greying)",
        "hair_style": "0 crew cut .. 1 long",
        "skin_tone": "0 light .. 1 dark",
        "eye_size": "0 small .. 1 large",
        "glasses": f"probability that glasses are drawn (renderer value >= {GLASSES_THRESHOLD})",
        "face_shape": "0 narrow oval .. 1 wide round",
        "background": "background hue / 0.78 (0 red .. green .. 1 violet)",
        "quality": "probability of a clean, whole face (trained against blotches, blur, noise, "
        "channel swaps, partial or missing faces, ghosts, warps, scrambles)",
    }
    card = {
        "name": "toyfaces-attributes",
        "description": "Attribute and face-quality model of the toy-face domain (training/toyfaces): the "
        "filter's scorer and the labeller for fitting directions. Not a model zoo entry.",
        "file": ONNX_NAME,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "input": {
            "name": "input",
            "layout": "NCHW",
            "dtype": "float32",
            "size": [INPUT_SIZE, INPUT_SIZE],
            "channels": 3,
            "range": [-1, 1],
            "normalisation": "x = (pixels/255 - 0.5) / 0.5 (mean 0.5, std 0.5)",
            "resize": "PIL bilinear from any size",
        },
        "output": {
            "name": "scores",
            "shape": ["N", len(OUTPUT_NAMES)],
            "activation": "sigmoid (already applied)",
            "columns": [{"index": i, "name": n, "meaning": meaning[n]} for i, n in enumerate(OUTPUT_NAMES)],
        },
        "filter": {
            "adults": {"index": 0, "keep": [ADULT_AGE, 1.0]},
            "artifacts": {"index": QUALITY_INDEX, "keep": [0.5, 1.0]},
            "command": "distill filter DATASET --scorer model_zoo/toyfaces-attributes/attributes.onnx "
            f"--attribute age=0 --attribute quality={QUALITY_INDEX} "
            f"--keep age={ADULT_AGE}: --keep quality=0.5:",
        },
        "held_out": metrics,
        "training": {**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, **info},
        "recipe": command,
    }
    return atomic_write_json(out_dir / CARD_NAME, card)
