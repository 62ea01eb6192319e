"""Latent directions in StyleGAN2's W space: fit from scored samples (``editing.directions`` loads and applies).

A direction ``d`` edits an image by ``w' = w + alpha * d`` on the W+ layers ``[start, stop)``
(default 0-7: coarse and middle styles, as the StyleGAN2-distillation code did). Three estimators
fit ``d`` from sampled ``w`` and a per-sample attribute score:

- ``logistic``: the normal of a logistic-regression classifier of ``score > threshold`` (the
  distillation authors' method);
- ``linear-svm``: the normal of a linear SVM on the same labels (InterFaceGAN);
- ``regression``: the slope of regressing ``w`` on the score, i.e. how ``w`` moves per unit of the
  attribute (equivalently the difference of class means). Classifier normals separate the classes
  but can point along directions the image barely reacts to; this one follows the data.

Every fitted direction is saved unit-normalised as ``.npy`` with a JSON sidecar (attribute, space,
layers, method, suggested alpha, held-out metrics, sample count, generator sha256).

Several attributes at once (``distill direction fit-set``, :func:`fit_directions`): a direction fitted on
one attribute alone also moves whatever the teacher entangles with it, so each is decorrelated from the
others, ``conditional`` (InterFaceGAN's projection off the other attributes' boundary normals) or ``joint``
(regression of ``w`` on all the scores), and :func:`measure_leak` reports, on unseen seeds, how much every
attribute changes per unit of the edited one.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.atomic import atomic_write, atomic_write_json, atomic_write_text
from core.errors import DistillError, FieldError
from core.hashing import sha256_file as file_sha256  # the name the stages import
from editing.directions import DEFAULT_LAYERS, apply_direction
from model_zoo.schema import provenance

METHODS = ("logistic", "linear-svm", "regression")
MODES = ("marginal", "conditional", "joint")


# ----------------------------------------------------------------------------------------------
# Seeds, files, layers.


def z_from_seeds(seeds: list[int] | np.ndarray, z_dim: int) -> torch.Tensor:
    """One z per seed from a CPU ``torch.Generator`` seeded by the seed: the same z on every device."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def parse_layers(text: str, field: str = "layers") -> tuple[int, int]:
    """``"0:8"`` -> (0, 8): the W+ layer range [start, stop); FieldError naming ``field`` otherwise."""
    try:
        start, stop = (int(p) for p in text.split(":"))
    except ValueError:
        raise FieldError(field, f"{text!r}: expected START:STOP, e.g. 0:8") from None
    if not 0 <= start < stop:
        raise FieldError(field, f"{text!r}: need 0 <= START < STOP")
    return start, stop


# ----------------------------------------------------------------------------------------------
# Fitting.


@dataclass
class DirectionFit:
    """A fitted unit direction in W with its held-out quality."""

    direction: np.ndarray  # [w_dim], unit length, pointing towards higher scores
    method: str
    threshold: float  # the score that splits the classes (classifiers) / reports accuracy (regression)
    n_train: int
    n_test: int
    metrics: dict[str, float] = field(default_factory=dict)  # held-out: accuracy, correlation, r2
    suggested_alpha: float = 0.0  # 2 standard deviations of the samples along the direction
    alpha_per_unit: float | None = None  # regression: alpha that moves the attribute by one score unit


def _fit_linear_classifier(x: np.ndarray, y: np.ndarray, loss: str, l2: float) -> tuple[np.ndarray, float]:
    """Full-batch L-BFGS on mean loss + l2/2 |w|^2; labels y in {0, 1}. Returns (weights, bias)."""
    xt = torch.from_numpy(x).double()
    yt = torch.from_numpy(y).double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        margin = xt @ w + b
        if loss == "logistic":
            data = torch.nn.functional.binary_cross_entropy_with_logits(margin, yt)
        else:  # squared hinge: the L2-SVM that liblinear's LinearSVC solves by default
            data = torch.relu(1 - (2 * yt - 1) * margin).square().mean()
        obj = data + 0.5 * l2 * w.square().sum()
        obj.backward()
        return obj

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def _r2(pred: np.ndarray, target: np.ndarray) -> float:
    ss_res = float(np.square(target - pred).sum())
    ss_tot = float(np.square(target - target.mean()).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0


def _checked(w: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``w`` [N, w_dim] and ``scores`` [N] or [N, K]; DistillError on mismatched or non-finite input."""
    w = np.asarray(w, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores.reshape(-1) if scores.ndim < 2 else scores
    if w.ndim != 2 or w.shape[0] != scores.shape[0]:
        raise DistillError(f"need w [N, w_dim] and N scores; got w {w.shape} and {scores.shape[0]} scores")
    if not (np.isfinite(w).all() and np.isfinite(scores).all()):
        raise DistillError("scores or latents contain NaN or infinite values")
    return w, scores


def fit_direction(
    w: np.ndarray,
    scores: np.ndarray,
    method: str = "regression",
    threshold: float | None = None,
    test_fraction: float = 0.2,
    l2: float | None = None,
    seed: int = 0,
) -> DirectionFit:
    """Fit a unit direction in W from samples ``w`` [N, w_dim] and attribute ``scores`` [N].

    Labels for the classifiers are ``score > threshold`` (default: the training median). A seeded
    random ``test_fraction`` of the samples is held out; the metrics are computed on it only:
    ``correlation`` (of the projection on the direction with the score), ``r2`` (of a 1-D linear fit of
    the score on that projection, fitted on the training part) and ``accuracy`` (classifiers: their own
    decision; regression: the 1-D fit's prediction against the threshold).
    """
    if method not in METHODS:
        raise DistillError(f"--method {method}: unknown; choose one of {', '.join(METHODS)}")
    w, scores = _checked(w, scores)
    train, test = _split(w.shape[0], test_fraction, seed)
    x_tr, s_tr, x_te, s_te = w[train], scores[train], w[test], scores[test]
    thr = float(np.median(s_tr)) if threshold is None else float(threshold)
    y_tr = (s_tr > thr).astype(np.float64)
    if method != "regression" and (y_tr.min() == y_tr.max()):
        raise DistillError(
            f"threshold {thr:g} puts every training sample in one class; choose another --threshold"
        )
    mean = x_tr.mean(axis=0)

    bias = 0.0
    alpha_per_unit = None
    if method == "regression":
        sc = s_tr - s_tr.mean()
        if float(sc @ sc) == 0:
            raise DistillError("every score is the same; nothing to regress on")
        slope = (x_tr - mean).T @ sc / (sc @ sc)  # d w / d score, one least-squares slope per W dimension
        raw = slope
        alpha_per_unit = float(np.linalg.norm(slope))
    else:
        raw, bias = _fit_linear_classifier(x_tr - mean, y_tr, method, 1.0 / len(train) if l2 is None else l2)
    norm = float(np.linalg.norm(raw))
    if norm == 0:
        raise DistillError("the fit found no direction (all-zero normal); check the scores")
    fit = _assess(raw / norm, method, w, scores, train, test, thr, alpha_per_unit)
    if method != "regression":  # a classifier's accuracy is that of its own decision
        decision = (x_te - mean) @ raw + bias > 0
        fit.metrics["accuracy"] = float((decision == (s_te > thr)).mean())
    return fit


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: a seeded random ``test_fraction`` held out, the same for every attribute."""
    n_test = max(1, int(round(n * test_fraction)))
    if n - n_test < 4:
        raise DistillError(f"only {n} samples: need at least {4 + n_test} to fit and hold out (use --num)")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_test:], perm[:n_test]


def _assess(
    d: np.ndarray,
    method: str,
    w: np.ndarray,
    scores: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    thr: float,
    alpha_per_unit: float | None,
) -> DirectionFit:
    """The fit of unit direction ``d`` with its held-out metrics: ``correlation`` (of the projection on ``d``
    with the score), ``r2`` and ``accuracy`` (against ``thr``) of a 1-D linear fit of the score on that
    projection, fitted on the training part."""
    x_tr, s_tr, x_te, s_te = w[train], scores[train], w[test], scores[test]
    mean = x_tr.mean(axis=0)
    p_tr, p_te = (x_tr - mean) @ d, (x_te - mean) @ d
    slope1, icpt1 = np.polyfit(p_tr, s_tr, 1)
    pred_te = slope1 * p_te + icpt1
    metrics = {
        "correlation": float(np.corrcoef(p_te, s_te)[0, 1]) if len(test) > 1 and s_te.std() > 0 else 0.0,
        "r2": _r2(pred_te, s_te) if len(test) > 1 else 0.0,
        "accuracy": float(((pred_te > thr) == (s_te > thr)).mean()),
    }
    return DirectionFit(
        direction=d.astype(np.float32),
        method=method,
        threshold=thr,
        n_train=len(train),
        n_test=len(test),
        metrics=metrics,
        suggested_alpha=float(2.0 * p_tr.std()),
        alpha_per_unit=alpha_per_unit,
    )


def attribute_normals(w: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Unit normals [K, w_dim] of each attribute's boundary in W, as InterFaceGAN takes them: the normal of a
    linear classifier (logistic, L2 1/N) of ``score > median``, one per score column. A direction orthogonal to
    a normal moves along that attribute's boundary: the attribute stays as it was, to first order."""
    x = w - w.mean(axis=0)
    normals = []
    for column in scores.T:
        labels = (column > np.median(column)).astype(np.float64)
        if labels.min() == labels.max():
            raise DistillError("an attribute scores the same on every sample: nothing to condition on")
        normal, _ = _fit_linear_classifier(x, labels, "logistic", 1.0 / len(x))
        normals.append(normal / np.linalg.norm(normal))
    return np.stack(normals)


def condition(d: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """InterFaceGAN's conditional manipulation: ``d`` with its component in the span of ``normals`` [M, w_dim]
    removed, renormalised; editing along it leaves the conditioned attributes unchanged to first order."""
    q, _ = np.linalg.qr(np.asarray(normals, dtype=np.float64).T)
    out = d - q @ (q.T @ d)
    norm = float(np.linalg.norm(out))
    if norm < 1e-6:
        raise DistillError(
            "the direction lies in the span of the conditioned attributes' normals: condition on fewer"
        )
    return out / norm


def fit_directions(
    w: np.ndarray,
    scores: np.ndarray,
    mode: str = "conditional",
    method: str = "regression",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> list[DirectionFit]:
    """One direction per score column of ``scores`` [N, K], each decorrelated from the other K-1 by ``mode``:

    - ``marginal``: :func:`fit_direction` on each column alone (leaks whatever correlates with it);
    - ``conditional``: each marginal direction projected orthogonally to the other attributes' boundary
      normals (InterFaceGAN's conditional manipulation: :func:`attribute_normals`, :func:`condition`);
    - ``joint``: the rows of the regression of ``w`` on all K scores together: how ``w`` moves per unit of
      one attribute with the others held fixed (``alpha_per_unit``); ``method`` is ignored.

    All modes hold out the same seeded samples, on which the metrics are computed.
    """
    if mode not in MODES:
        raise DistillError(f"--mode {mode}: unknown; choose one of {', '.join(MODES)}")
    w, scores = _checked(w, scores)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise DistillError("decorrelating needs at least two attributes")
    k = scores.shape[1]
    if mode != "joint":
        fits = [
            fit_direction(w, scores[:, j], method, test_fraction=test_fraction, seed=seed) for j in range(k)
        ]
        if mode == "marginal":
            return fits
    train, test = _split(w.shape[0], test_fraction, seed)
    thr = np.median(scores[train], axis=0)
    if mode == "conditional":
        normals = attribute_normals(w[train], scores[train])
        others = [[i for i in range(k) if i != j] for j in range(k)]
        dirs = [condition(fits[j].direction.astype(np.float64), normals[others[j]]) for j in range(k)]
        return [_assess(dirs[j], method, w, scores[:, j], train, test, thr[j], None) for j in range(k)]
    x = w[train] - w[train].mean(axis=0)
    sc = scores[train] - scores[train].mean(axis=0)
    if np.linalg.matrix_rank(sc) < k:
        raise DistillError("the attributes' scores are linearly dependent: fit them jointly without one")
    slopes = np.linalg.lstsq(sc, x, rcond=None)[0]  # [K, w_dim]: d w / d score_j, the others held fixed
    per_unit = np.linalg.norm(slopes, axis=1)
    return [
        _assess(slopes[j] / per_unit[j], "joint", w, scores[:, j], train, test, thr[j], float(per_unit[j]))
        for j in range(k)
    ]


def save_direction(path: str | os.PathLike, fit: DirectionFit, **meta: Any) -> Path:
    """Write ``path`` (.npy, [w_dim]) and ``path`` with suffix .json (the fit's metadata + ``meta``)."""
    path = Path(path)
    if path.suffix != ".npy":
        raise DistillError(f"--out {path}: a direction is saved as .npy; use a name ending in .npy")
    atomic_write(path, lambda f: np.save(f, fit.direction, allow_pickle=False))
    info = {k: v for k, v in asdict(fit).items() if k != "direction"}
    atomic_write_json(path.with_suffix(".json"), {"file": path.name, "space": "W", **meta, **info})
    return path


# ----------------------------------------------------------------------------------------------
# `distill direction fit`.


def read_scores_csv(path: str | os.PathLike, column: str | None = None) -> tuple[list[int], np.ndarray]:
    """A CSV with a ``seed`` column and one score column (``column``, or the only other one)."""
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"--scores {path}: file not found (expected CSV with columns seed,score)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        others = [c for c in fields if c != "seed"]
        if "seed" not in fields or not others:
            raise DistillError(f"--scores {path}: need a 'seed' column and a score column, got {fields}")
        if column is not None and column not in others:
            raise DistillError(
                f"--column {column}: not a score column of {path}; its columns: {', '.join(others)}"
            )
        if column is None and len(others) > 1:
            raise DistillError(
                f"--scores {path} has several score columns ({', '.join(others)}); name one with "
                f"--column, e.g. --column {others[0]}"
            )
        col = column or others[0]
        seeds, scores = [], []
        for lineno, row in enumerate(reader, 2):
            try:
                seeds.append(int(row["seed"]))
                scores.append(float(row[col]))
            except (TypeError, ValueError):
                raise DistillError(
                    f"--scores {path}:{lineno}: seed must be an integer and {col} a number"
                ) from None
    if len(set(seeds)) != len(seeds):
        raise DistillError(f"--scores {path}: repeated seeds")
    return seeds, np.asarray(scores)


@torch.no_grad()
def sample_w(
    G: torch.nn.Module, seeds: list[int], truncation: float, device: torch.device, batch_size: int
) -> np.ndarray:
    """w [N, w_dim] for each seed (the mapping output, before broadcasting to the W+ layers)."""
    out = []
    for i in range(0, len(seeds), batch_size):
        z = z_from_seeds(seeds[i : i + batch_size], G.z_dim).to(device)
        out.append(G.mapping(z, truncation_psi=truncation)[:, 0].float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def score_seeds(
    G: torch.nn.Module,
    scorer: Any,
    keys: list[str],
    seeds: list[int],
    truncation: float,
    device: torch.device,
    batch_size: int,
    edit: tuple[torch.Tensor, float, tuple[int, int]] | None = None,
    desc: str = "sample+score",
) -> tuple[np.ndarray, np.ndarray]:
    """(w [N, w_dim], scores [N, len(keys)]) of each seed's image; with ``edit=(d, alpha, layers)`` of the
    edited image."""
    from tqdm import tqdm

    from editing.images import to_uint8

    w_parts, s_parts = [], []
    with tqdm(total=len(seeds), unit="img", desc=desc) as bar:
        for i in range(0, len(seeds), batch_size):
            z = z_from_seeds(seeds[i : i + batch_size], G.z_dim).to(device)
            ws = G.mapping(z, truncation_psi=truncation)
            w_parts.append(ws[:, 0].float().cpu().numpy())
            if edit is not None:
                ws = apply_direction(ws, edit[0], edit[1], edit[2])
            images = to_uint8(G.synthesis(ws, noise_mode="const"))
            s_parts.extend([r[k] for k in keys] for r in scorer.score(images))
            bar.update(len(z))
    return np.concatenate(w_parts), np.asarray(s_parts, dtype=np.float64)


def measure_effect(
    G: torch.nn.Module,
    scorer: Any,
    key: str,
    fit: DirectionFit,
    seeds: list[int],
    base: np.ndarray,
    layers: tuple[int, int],
    truncation: float,
    device: torch.device,
    batch_size: int,
) -> dict[str, float]:
    """Edit ``seeds`` by the fit's suggested alpha and re-score: how far the direction moves the picture."""
    d = torch.from_numpy(fit.direction)
    _, edited = score_seeds(
        G,
        scorer,
        [key],
        seeds,
        truncation,
        device,
        batch_size,
        edit=(d, fit.suggested_alpha, layers),
        desc=f"check {fit.method}",
    )
    delta = edited[:, 0] - base
    return {
        "alpha": fit.suggested_alpha,
        "score_delta_mean": float(delta.mean()),
        "score_delta_std": float(delta.std()),
        "n": len(seeds),
    }


@dataclass
class FitOptions:
    """What ``distill direction fit`` does: one field per flag. Exactly one of ``scores`` (a CSV) and ``scorer``
    (an ONNX model) gives the per-sample scores."""

    generator: str | os.PathLike
    attribute: str
    out: str | os.PathLike
    scores: str | os.PathLike | None = None
    column: str | None = None
    scorer: str | os.PathLike | None = None
    output_index: int = 0
    input_size: int | tuple[int, int] | None = None
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    activation: str = "none"
    num: int = 2000
    seed_start: int = 0
    method: str = "regression"  # one of METHODS, or "all"
    check: int = 32
    threshold: float | None = None
    layers: tuple[int, int] = DEFAULT_LAYERS
    truncation: float = 1.0
    batch_size: int = 16
    device: str = "auto"

    def __post_init__(self) -> None:
        if (self.scores is None) == (self.scorer is None):
            raise DistillError("give exactly one of --scores scores.csv or --scorer model.onnx")
        if self.method not in (*METHODS, "all"):
            raise DistillError(f"--method {self.method!r}: choose from {', '.join(METHODS)}, all")
        if self.method == "all" and self.scorer is None:
            raise DistillError(
                "--method all compares how far each direction moves the images: it needs --scorer"
            )


def run_fit(opts: FitOptions) -> DirectionFit:
    """Sample, score, fit (each method with ``all``), save the strongest direction to ``opts.out``; returns it."""
    from networks.stylegan2 import load_generator
    from training.devices import exact_float32, pick_device
    from training.onnx_scorer import OnnxScorer

    device = pick_device(opts.device)
    exact_float32()
    G = load_generator(opts.generator, device=device)
    scorer = None
    if opts.scores is not None:
        seeds, scores = read_scores_csv(opts.scores, opts.column)
        w = sample_w(G, seeds, opts.truncation, device, opts.batch_size)
    else:
        scorer = OnnxScorer(
            opts.scorer,
            outputs={opts.attribute: opts.output_index},
            input_size=opts.input_size,
            mean=opts.mean,
            std=opts.std,
            activation=opts.activation,
        )
        seeds = list(range(opts.seed_start, opts.seed_start + opts.num))
        w, scored = score_seeds(G, scorer, [opts.attribute], seeds, opts.truncation, device, opts.batch_size)
        scores = scored[:, 0]
        if (scorer.output_width or 1) > 1:
            print(
                f"scorer {opts.scorer}: reading value {opts.output_index} of its {scorer.output_width} outputs as "
                f"{opts.attribute!r} (scores {scores.min():.4g} to {scores.max():.4g}); another one: --output-index"
            )
    methods = METHODS if opts.method == "all" else (opts.method,)
    fits = [fit_direction(w, scores, method=m, threshold=opts.threshold) for m in methods]
    effects: list[dict[str, float] | None] = [None] * len(fits)
    if scorer is not None and opts.check > 0:
        check = list(range(max(seeds) + 1, max(seeds) + 1 + opts.check))  # seeds the fit never saw
        base = score_seeds(
            G,
            scorer,
            [opts.attribute],
            check,
            opts.truncation,
            device,
            opts.batch_size,
            desc="check originals",
        )[1][:, 0]
        effects = [
            measure_effect(
                G,
                scorer,
                opts.attribute,
                f,
                check,
                base,
                opts.layers,
                opts.truncation,
                device,
                opts.batch_size,
            )
            for f in fits
        ]
    best = max(range(len(fits)), key=lambda i: effects[i]["score_delta_mean"] if effects[i] else 0.0)
    fit = fits[best]
    comparison = [{"method": f.method, **f.metrics, "effect": e} for f, e in zip(fits, effects, strict=True)]
    save_direction(
        opts.out,
        fit,
        attribute=opts.attribute,
        layers=list(opts.layers),
        normalize=False,
        generator={"path": provenance(Path(opts.generator).resolve()), "sha256": file_sha256(opts.generator)},
        truncation=opts.truncation,
        n_samples=len(scores),
        scores_from=provenance(Path(opts.scores or opts.scorer).resolve()),
        score_mean=float(scores.mean()),
        score_std=float(scores.std()),
        effect=effects[best],
        comparison=comparison if len(fits) > 1 else None,
    )
    print(
        f"direction {opts.attribute!r}: {len(scores)} samples ({fit.n_train} fit, {fit.n_test} held out), "
        f"score mean {scores.mean():.4g} std {scores.std():.4g}"
    )
    print(f"  {'method':<11} {'accuracy':>8} {'corr':>6} {'R^2':>6} {'alpha':>7} {'score change':>14}")
    for f, e in zip(fits, effects, strict=True):
        moved = f"{e['score_delta_mean']:+.4g} +- {e['score_delta_std']:.2g}" if e else "-"
        mark = " <- saved" if f is fit and len(fits) > 1 else ""
        m = f.metrics
        print(
            f"  {f.method:<11} {m['accuracy']:8.3f} {m['correlation']:6.3f} {m['r2']:6.3f} "
            f"{f.suggested_alpha:7.3g} {moved:>14}{mark}"
        )
    print(
        f"  accuracy: held-out, classes score > {fit.threshold:.4g}; score change: the edit at the suggested "
        f"alpha on layers {opts.layers[0]}:{opts.layers[1]}, re-scored on unseen seeds"
    )
    if fit.alpha_per_unit is not None:
        print(f"  alpha per unit of {opts.attribute} (regression): {fit.alpha_per_unit:.4g}")
    print(f"  wrote {opts.out} and {Path(opts.out).with_suffix('.json')}")
    return fit


# ----------------------------------------------------------------------------------------------
# `distill direction fit-set`: several attributes, decorrelated, with the leak between them measured.


def measure_leak(
    G: torch.nn.Module,
    scorer: Any,
    keys: list[str],
    fits: list[DirectionFit],
    seeds: list[int],
    base: np.ndarray,
    layers: tuple[int, int],
    truncation: float,
    device: torch.device,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Edit ``seeds`` along each fit (one per key, at its suggested alpha) and re-score every key.

    Returns (``leak`` [K, K], ``moved`` [K]): row k of ``leak`` is the mean change of each attribute per unit
    of the mean change of attribute k (so ``leak[k, k] == 1``), ``moved[k]`` that mean change of attribute k.
    ``base`` [len(seeds), K] holds the unedited scores.
    """
    leak = np.zeros((len(keys), len(keys)))
    moved = np.zeros(len(keys))
    for k, (key, fit) in enumerate(zip(keys, fits, strict=True)):
        edit = (torch.from_numpy(fit.direction), fit.suggested_alpha, layers)
        _, edited = score_seeds(
            G, scorer, keys, seeds, truncation, device, batch_size, edit=edit, desc=f"leak of {key}"
        )
        delta = (edited - base).mean(axis=0)
        moved[k] = delta[k]
        leak[k] = delta / delta[k] if delta[k] != 0 else np.nan
    return leak, moved


def leak_table(keys: list[str], leak: np.ndarray, title: str) -> str:
    """A markdown table of ``leak`` (rows: directions, columns: the attributes they change per unit of their own)."""
    lines = [
        f"**{title}**: change of each attribute (column) per unit change of the edited one (row)",
        "",
        "| direction | " + " | ".join(keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for key, row in zip(keys, leak, strict=True):
        lines.append(f"| {key} | " + " | ".join(f"{v:+.3f}" for v in row) + " |")
    return "\n".join(lines) + "\n"


@dataclass
class FitSetOptions:
    """What ``distill direction fit-set`` does: one field per flag. ``attribute`` lists the scorer's outputs as
    ``NAME=INDEX``; one direction per attribute is written to ``out_dir/NAME.npy``."""

    generator: str | os.PathLike
    scorer: str | os.PathLike
    attribute: list[str]
    out_dir: str | os.PathLike
    mode: str = "conditional"
    method: str = "regression"
    input_size: int | tuple[int, int] | None = None
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    activation: str = "none"
    num: int = 2000
    seed_start: int = 0
    check: int = 200
    layers: tuple[int, int] = DEFAULT_LAYERS
    truncation: float = 1.0
    batch_size: int = 16
    device: str = "auto"
    outputs: dict[str, int] = field(init=False, repr=False)  # name -> scorer column, from ``attribute``

    def __post_init__(self) -> None:
        from training.options import parse_name_index

        if self.mode not in MODES:
            raise FieldError("mode", f"{self.mode!r}: choose from {', '.join(MODES)}")
        if self.method not in METHODS:
            raise FieldError("method", f"{self.method!r}: choose from {', '.join(METHODS)}")
        self.outputs = dict(parse_name_index(a, "attribute") for a in self.attribute)
        names = list(self.outputs)
        if len(names) != len(self.attribute) or len(names) < 2:
            raise FieldError(
                "attribute", "needs at least two different attributes: repeat it, e.g. age=0, smile=1"
            )
        bad = [n for n in names if not n.replace("_", "").replace("-", "").isalnum()]
        if bad:
            raise FieldError(
                "attribute", f"{bad[0]!r}: a name is a file name here; use letters, digits, _ and -"
            )
        if self.check < 1:
            raise FieldError(
                "check", f"{self.check}: the leak is measured on held-out seeds; need at least 1"
            )


def run_fit_set(opts: FitSetOptions) -> dict[str, Any]:
    """Sample and score once, fit one direction per attribute by ``opts.mode``, measure on unseen seeds how much
    each moves the others (and, for the decorrelated modes, how much the marginal fits did), write the
    directions with their sidecars and ``leak.json`` / ``leak.md``; returns the leak report."""
    from networks.stylegan2 import load_generator
    from training.devices import exact_float32, pick_device
    from training.onnx_scorer import OnnxScorer

    device = pick_device(opts.device)
    exact_float32()
    G = load_generator(opts.generator, device=device)
    scorer = OnnxScorer(
        opts.scorer,
        outputs=opts.outputs,
        input_size=opts.input_size,
        mean=opts.mean,
        std=opts.std,
        activation=opts.activation,
    )
    keys = list(opts.outputs)
    seeds = list(range(opts.seed_start, opts.seed_start + opts.num))
    w, scores = score_seeds(G, scorer, keys, seeds, opts.truncation, device, opts.batch_size)
    modes = ["marginal"] if opts.mode == "marginal" else ["marginal", opts.mode]
    fits = {m: fit_directions(w, scores, mode=m, method=opts.method) for m in modes}
    check = list(range(max(seeds) + 1, max(seeds) + 1 + opts.check))  # seeds the fit never saw
    _, base = score_seeds(
        G, scorer, keys, check, opts.truncation, device, opts.batch_size, desc="check originals"
    )
    measured = {
        m: measure_leak(
            G, scorer, keys, f, check, base, opts.layers, opts.truncation, device, opts.batch_size
        )
        for m, f in fits.items()
    }
    report: dict[str, Any] = {
        "attributes": keys,
        "mode": opts.mode,
        "n_samples": len(seeds),
        "n_check": len(check),
        "leak": {m: leak.tolist() for m, (leak, _) in measured.items()},
        "moved": {m: moved.tolist() for m, (_, moved) in measured.items()},
    }
    out_dir = Path(opts.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    leak, moved = measured[opts.mode]
    for k, key in enumerate(keys):
        fit = fits[opts.mode][k]
        save_direction(
            out_dir / f"{key}.npy",
            fit,
            attribute=key,
            layers=list(opts.layers),
            normalize=False,
            generator={
                "path": provenance(Path(opts.generator).resolve()),
                "sha256": file_sha256(opts.generator),
            },
            truncation=opts.truncation,
            n_samples=len(seeds),
            scores_from=provenance(Path(opts.scorer).resolve()),
            score_mean=float(scores[:, k].mean()),
            score_std=float(scores[:, k].std()),
            mode=opts.mode,
            decorrelated_from=[o for o in keys if o != key] if opts.mode != "marginal" else [],
            effect={"alpha": fit.suggested_alpha, "score_delta_mean": float(moved[k]), "n": len(check)},
            leak={m: dict(zip(keys, measured[m][0][k].tolist(), strict=True)) for m in measured},
        )
    atomic_write_json(out_dir / "leak.json", report)
    md = "\n".join(leak_table(keys, measured[m][0], f"{m} directions") for m in measured)
    atomic_write_text(out_dir / "leak.md", md)
    print(
        f"{len(keys)} directions ({opts.mode}, {opts.method if opts.mode != 'joint' else 'joint regression'}) "
        f"from {len(seeds)} samples; leak on {len(check)} unseen seeds, each edited at its suggested alpha on "
        f"layers {opts.layers[0]}:{opts.layers[1]}:\n"
    )
    print(md)
    print(f"wrote {', '.join(f'{k}.npy' for k in keys)} (+ .json), leak.json and leak.md to {out_dir}")
    return report


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON metadata beside a direction file, or None."""
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
