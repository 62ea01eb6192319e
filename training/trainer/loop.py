"""The training loop: a Trainer builds G, D and the data of one run and trains, samples, evaluates and checkpoints it."""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from core.atomic import atomic_duplicate, atomic_write_json
from core.errors import DistillError, file_errors
from core.runfiles import (
    CHECKPOINT,
    METRICS,
    PREVIOUS_CHECKPOINT,
    RUN_JSON,
    SAMPLES,
    append_jsonl,
    truncate_jsonl,
)
from editing.images import make_grid, save_image, to_uint8
from networks.pix2pixhd import (
    Pix2PixHDConfig,
    build_discriminator,
    build_generator,
    build_vgg_loss,
    save_generator,
)
from training.augment import parse_augmentation
from training.dataset import PairDataset, PairSplit, load_split
from training.manifest import read_metadata
from training.metrics import psnr, ssim
from training.trainer.checkpoints import LogWindow, Progress, rng_state, set_rng_state
from training.trainer.distributed import DistEnv, ResumableSampler, _worker_init, _worker_message
from training.trainer.objective import Pix2PixHDObjective, learning_rate, resolve_amp
from training.trainer.options import TrainOptions


@dataclass
class TrainResult:
    """How a call to :func:`train` ended."""

    progress: Progress
    status: str  # "finished" | "max_steps" | "interrupted"
    last_eval: dict[str, float] = field(default_factory=dict)
    checkpoint: str = ""


class _StopFlag:
    """SIGTERM/SIGINT set a flag the loop checks after each step; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Owns the data, networks, objective and run folder of one training job (one process of it)."""

    def __init__(
        self,
        opts: TrainOptions,
        cfg: Pix2PixHDConfig,
        env: DistEnv,
        device: torch.device,
        ckpt: dict[str, Any] | None = None,
    ) -> None:
        self.opts, self.cfg, self.env, self.device = opts, cfg, env, device
        self.run_dir = Path(opts.out)
        self.amp = resolve_amp(opts.amp, device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed training size: let cuDNN pick the fastest kernels
        with warnings.catch_warnings():
            if not env.is_main:
                warnings.simplefilter("ignore")
            self.data: PairSplit = load_split(
                opts.dataset,
                cfg.stride,
                val_fraction=opts.val_fraction,
                load_size=opts.load_size,
                flip=opts.flip,
                seed=opts.seed,
                augment=parse_augmentation(opts.augment),
            )
        self._check_strengths(resumed=ckpt is not None)
        cfg = self.cfg  # with a multi-edit dataset's K
        torch.manual_seed(opts.seed)
        G = build_generator(cfg).to(device)
        D = build_discriminator(cfg).to(device)
        self.progress = Progress()
        self.window = LogWindow()
        self._saved_step: int | None = (
            None  # the step of latest.pt: a save at that step replaces it, not rotates
        )
        self.last_eval: dict[str, float] = {}
        if ckpt is not None:
            G.load_state_dict(ckpt["G"])
            D.load_state_dict(ckpt["D"])
        elif opts.init:
            self._note(self._warm_start(G))
        if env.distributed:
            ids = [device.index] if device.type == "cuda" else None
            G = DistributedDataParallel(G, device_ids=ids)
            D = DistributedDataParallel(D, device_ids=ids)
        vgg = build_vgg_loss(opts.vgg19) if cfg.lambda_vgg > 0 else None
        self.objective = Pix2PixHDObjective(
            G, D, cfg, device, self.amp, vgg.to(device) if vgg is not None else None
        )
        if ckpt is not None and ckpt.get("G_ema") is not None and self.objective.g_ema is not None:
            self.objective.g_ema.load_state_dict(ckpt["G_ema"])
        if ckpt is not None:
            self.objective.load_state_dict(ckpt)
            self.progress = Progress(ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"])
            self._saved_step = self.progress.global_step
            if ckpt.get("log_window"):
                self.window = LogWindow.from_state_dict(ckpt["log_window"], device)
            self.last_eval = dict(ckpt.get("last_eval", {}))
            self._check_resumable(ckpt)
            set_rng_state(ckpt["rng"])
        self.sampler = ResumableSampler(self.data.train, env, opts.seed)
        self.train_loader = self._loader(self.data.train, self.sampler)
        self.val_loader = self._loader(self.data.val, None) if len(self.data.val) else None
        self.steps_per_epoch = math.ceil(len(self.sampler.inner) / opts.batch_size)
        self.total_epochs = cfg.niter + cfg.niter_decay
        self.total_steps = self.total_epochs * self.steps_per_epoch
        if opts.max_steps is not None:
            self.total_steps = min(self.total_steps, opts.max_steps)
        self.sample_batch = self._sample_batch()

    # -- setup helpers

    def _check_strengths(self, resumed: bool) -> None:
        """A conditional student needs pairs over a range of strengths (its K edits: the multi-edit dataset's,
        set here on a new run); a plain one warns on a range and refuses several edits."""
        edits = self.data.edits
        if len(edits) > 1 and self.cfg.condition == "none":
            raise DistillError(
                f"{self.opts.dataset}: a multi-edit dataset ({', '.join(edits)}) needs a student conditioned "
                "on the strength vector: pass --residual --condition plane|modulation"
            )
        if edits and self.cfg.n_edits != len(edits):
            if resumed:  # the checkpoint fixes K
                raise DistillError(
                    f"{self.opts.dataset}: {len(edits)} edits ({', '.join(edits)}) but the run's student has "
                    f"{self.cfg.n_edits}; train into a new --out"
                )
            self.cfg = self.cfg.replace(n_edits=len(edits))
        if not edits and self.cfg.n_edits != 1:
            raise DistillError(
                f"{self.opts.dataset}: one edit, but the run's student has {self.cfg.n_edits}; train into a new --out"
            )
        ranged = bool(edits) or any(r.strength is not None for r in self.data.train.rows)
        if self.cfg.condition != "none" and not ranged:
            raise DistillError(
                f"--condition {self.cfg.condition}: {self.opts.dataset} has one fixed strength; make "
                "pairs over a range with `distill pairs --alpha-range=LO:HI`"
            )
        if self.cfg.condition == "none" and ranged:
            self._note(
                f"{self.opts.dataset}: pairs over a range of strengths but a fixed-strength student; "
                "pass --condition plane|modulation (with --residual) to learn the strength"
            )

    def _warm_start(self, G: nn.Module) -> str:
        """Load ``opts.init`` into G, folding norms over up to 64 train inputs (see networks/pix2pixhd/warmstart.py)."""
        from networks.pix2pixhd.warmstart import warm_start

        items = [self.data.train[i] for i in range(min(64, len(self.data.train)))]
        inputs = torch.stack([it["a"] for it in items]).to(self.device)
        strength = (
            None
            if self.cfg.condition == "none"
            else torch.stack([it["strength"] for it in items]).to(self.device)
        )
        with file_errors(self.opts.init):
            return warm_start(G, self.opts.init, inputs, strength)

    def _check_resumable(self, ckpt: dict[str, Any]) -> None:
        """Mid-epoch resumption needs the same train set and shard layout; otherwise restart that epoch."""
        same_data = ckpt.get("train_seeds") == [r.seed for r in self.data.train.rows]
        same_world = ckpt.get("world_size") == self.env.world_size
        if self.progress.step_in_epoch and not (same_data and same_world):
            why = (
                "the kept train pairs changed"
                if not same_data
                else f"world size {ckpt.get('world_size')} -> {self.env.world_size}"
            )
            self._note(
                f"resume: {why} since the checkpoint; epoch {self.progress.epoch} restarts from its first batch"
            )
            self.progress.step_in_epoch = 0
        elif not same_data:
            self._note(
                "resume: the kept train pairs changed since the checkpoint; new epochs use the current set"
            )

    def _sample_batch(self) -> torch.Tensor:
        """[2, n, 3, H, W]: inputs and targets of up to 4 held-out pairs (train pairs, unflipped, if none)."""
        source = (
            self.data.val
            if len(self.data.val)
            else PairDataset(self.data.train.root, self.data.train.rows, self.data.geometry)
        )
        items = [source[i] for i in range(min(4, len(source)))]
        self.sample_strength = torch.stack([it["strength"] for it in items])
        return torch.stack([torch.stack([it["a"] for it in items]), torch.stack([it["b"] for it in items])])

    def _note(self, msg: str) -> None:
        if self.env.is_main:
            tqdm.write(msg, file=sys.stderr)

    def _loader(self, dataset: PairDataset, sampler: Sampler | None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.opts.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.opts.workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init if self.opts.workers else None,
            persistent_workers=self.opts.workers > 0,
            # Workers start from a clean server process, not a fork of this one: a fork taken while other
            # threads (ONNX Runtime's, tqdm's monitor) hold locks can leave the worker deadlocked for good
            # (seen when the recipe resumed a student in the process that had just run its ONNX filter).
            multiprocessing_context="forkserver" if self.opts.workers else None,
        )

    # -- files (rank 0 only)

    def _append_metrics(self, row: dict[str, Any]) -> None:
        if self.env.is_main:
            append_jsonl(self.run_dir / METRICS, row)

    def _truncate_metrics(self) -> None:
        """On resume, drop rows logged after the checkpoint (they will be logged again) and torn lines."""
        if self.env.is_main:
            p = self.progress
            truncate_jsonl(
                self.run_dir / METRICS,
                lambda row: (
                    row.get("step", 0) <= p.global_step
                    and not (row.get("kind") == "epoch" and row.get("epoch", 0) >= p.epoch)
                ),
            )

    def _run_info(self, status: str) -> dict[str, Any]:
        try:
            meta = read_metadata(self.opts.dataset)
        except DistillError:
            meta = None
        g = self.data.geometry
        return {
            "format": "distill-run/1",
            "status": status,
            "dataset": str(Path(self.opts.dataset).resolve()),
            "dataset_metadata": meta,
            "data": {
                "pairs": self.data.n_total,
                "kept": self.data.n_kept,
                "train": len(self.data.train),
                "val": len(self.data.val),
                "height": g.height,
                "width": g.width,
                "stride": g.stride,
            },
            "preset": self.opts.preset,
            "config": asdict(self.cfg),
            "options": asdict(self.opts),
            "loss_terms": self.objective.terms,
            "world_size": self.env.world_size,
            "device": str(self.device),
            "amp": self.amp.name,
            "torch": torch.__version__,
            "epoch": self.progress.epoch,
            "step_in_epoch": self.progress.step_in_epoch,
            "global_step": self.progress.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "total_epochs": self.total_epochs,
            "metrics": self.last_eval,
            "checkpoint": CHECKPOINT,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def save(self, status: str) -> Path:
        """Atomically write the checkpoint and run.json (rank 0; other ranks return at once); the checkpoint
        it replaces (of an earlier step) becomes previous.pt."""
        path = self.run_dir / CHECKPOINT
        if not self.env.is_main:
            return path
        p = self.progress
        if path.is_file() and self._saved_step != p.global_step:  # latest stays in place until it is replaced
            atomic_duplicate(path, self.run_dir / PREVIOUS_CHECKPOINT)
        ema = self.objective.g_ema
        save_generator(
            self.objective.g_net,
            path,
            self.cfg,
            G_ema=None if ema is None else {k: v.detach().cpu() for k, v in ema.state_dict().items()},
            D={k: v.detach().cpu() for k, v in self.objective.d_net.state_dict().items()},
            **self.objective.state_dict(),
            epoch=p.epoch,
            step_in_epoch=p.step_in_epoch,
            global_step=p.global_step,
            rng=rng_state(),
            options=asdict(self.opts),
            dataset=str(Path(self.opts.dataset).resolve()),
            train_seeds=[r.seed for r in self.data.train.rows],
            val_seeds=[r.seed for r in self.data.val.rows],
            world_size=self.env.world_size,
            last_eval=self.last_eval,
            log_window=self.window.state_dict(),
        )
        self._saved_step = p.global_step
        atomic_write_json(self.run_dir / RUN_JSON, self._run_info(status))
        return path

    @torch.no_grad()
    def write_sample(self) -> None:
        """Grid of held-out pairs: a row of inputs, a row of student outputs, a row of teacher targets."""
        if not self.env.is_main:
            return
        a, b = self.sample_batch.to(self.device)
        fake = self._generate(self.objective.g_eval, a, self.sample_strength).float()
        rows = [list(to_uint8(x)) for x in (a, fake, b)]
        save_image(self.run_dir / SAMPLES / f"step_{self.progress.global_step:08d}.png", make_grid(rows))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean PSNR/SSIM/L1 of the student against the teacher on the held-out pairs (rank 0)."""
        if not self.env.is_main or self.val_loader is None:
            return {}
        G = self.objective.g_eval
        sums = {"val_psnr": 0.0, "val_ssim": 0.0, "val_l1": 0.0}
        for batch in self.val_loader:
            a, b = batch["a"].to(self.device), batch["b"].to(self.device)
            fake = self._generate(G, a, batch["strength"]).float()
            sums["val_psnr"] += psnr(fake, b).sum().item()
            sums["val_ssim"] += ssim(fake, b).sum().item()
            sums["val_l1"] += (fake - b).abs().flatten(1).mean(1).sum().item()
        n = len(self.data.val)
        return {k: v / n for k, v in sums.items()} | {"n_val": n}

    def _generate(self, G: nn.Module, a: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        """G(a), or G(a, strength) for a conditional generator."""
        return G(a) if self.cfg.condition == "none" else G(a, strength.to(self.device))

    # -- the loop

    def learning_rate(self) -> float:
        """NVIDIA's per-epoch schedule, times the linear decay over the last ``lr_decay_steps`` steps of the run."""
        lr = learning_rate(self.cfg, self.progress.epoch)
        if self.cfg.lr_decay_steps:
            left = self.total_steps - self.progress.global_step
            lr *= min(1.0, max(0.0, left / self.cfg.lr_decay_steps))
        return lr

    def _stop_requested(self, flag: _StopFlag) -> bool:
        """Every rank agrees: stop when any rank got a signal or the step budget is spent."""
        stop = flag.signum != 0
        if self.env.distributed:
            t = torch.tensor([int(stop)], device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            stop = bool(t.item())
        return stop or self.progress.global_step >= self.total_steps

    def train(self) -> TrainResult:
        """Run epochs until the schedule ends, --max-steps is reached or a signal arrives; checkpoint."""
        opts, p = self.opts, self.progress
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._truncate_metrics()
            atomic_write_json(self.run_dir / RUN_JSON, self._run_info("running"))
        bar = tqdm(
            total=self.total_steps,
            initial=min(p.global_step, self.total_steps),
            unit="step",
            desc="train",
            disable=not (self.env.is_main and opts.progress),
            dynamic_ncols=True,
        )
        status = "finished"
        with _StopFlag() as flag:
            while p.epoch < self.total_epochs:
                if self._stop_requested(flag):
                    break
                finished = self._train_epoch(flag, bar)
                if not finished:
                    break
                self.last_eval = self.evaluate()
                self._append_metrics(
                    {"kind": "epoch", "epoch": p.epoch, "step": p.global_step, **self.last_eval}
                )
                p.epoch, p.step_in_epoch = p.epoch + 1, 0
                self.save("running")
            if p.epoch < self.total_epochs:
                status = "interrupted" if flag.signum else "max_steps"
            path = self.save(status)
            bar.close()
            if flag.signum:
                self._note(
                    f"stopped by {signal.Signals(flag.signum).name} at step {p.global_step} "
                    f"(epoch {p.epoch}, batch {p.step_in_epoch}); checkpoint {path}; re-run with --resume to continue"
                )
            else:
                held_out = ", ".join(f"{k} {v:.4g}" for k, v in self.last_eval.items() if k != "n_val")
                if not held_out:
                    held_out = (
                        "held-out metrics come at the end of an epoch"
                        if len(self.data.val)
                        else "no held-out pairs"
                    )
                self._note(
                    f"{status} at step {p.global_step} (epoch {p.epoch}); {held_out}; checkpoint {path}"
                )
        if self.env.distributed and status != "interrupted":
            dist.barrier()
        return TrainResult(Progress(**asdict(p)), status, dict(self.last_eval), str(path))

    def _batches(self, flag: _StopFlag) -> Iterator[dict[str, torch.Tensor]]:
        """The epoch's remaining batches; ends early if a signal killed a data worker (it stops the run)."""
        it = iter(self.train_loader)
        while True:
            try:
                yield next(it)
            except StopIteration:
                return
            except (
                DistillError
            ) as e:  # raised in a data worker: DataLoader wraps the worker's traceback into it
                raise DistillError(_worker_message(str(e))) from None
            except RuntimeError:
                if not flag.signum:
                    raise
                return

    def _train_epoch(self, flag: _StopFlag, bar: tqdm) -> bool:
        """Train the rest of the current epoch; True if it ran to its end, False if told to stop."""
        opts, p = self.opts, self.progress
        self.sampler.set_epoch(p.epoch, start=p.step_in_epoch * opts.batch_size)
        self.objective.G.train()
        self.objective.D.train()
        window = self.window
        t0 = time.perf_counter() - window.seconds
        for batch in self._batches(flag):
            a = batch["a"].to(self.device, non_blocking=True)
            b = batch["b"].to(self.device, non_blocking=True)
            strength = (
                None if self.cfg.condition == "none" else batch["strength"].to(self.device, non_blocking=True)
            )
            self.objective.set_lr(self.learning_rate())
            losses = self.objective.step(a, b, strength)
            p.global_step += 1
            p.step_in_epoch += 1
            for k, v in losses.items():
                window.sums[k] = window.sums.get(k, 0) + v
            window.steps += 1
            window.seconds = time.perf_counter() - t0
            bar.update(1)
            if p.global_step % opts.log_every == 0 or p.step_in_epoch == self.steps_per_epoch:
                means = {f"loss_{k}": round(float(v) / window.steps, 6) for k, v in window.sums.items()}
                ips = window.steps * opts.batch_size * self.env.world_size / max(window.seconds, 1e-9)
                self._append_metrics(
                    {
                        "kind": "step",
                        "epoch": p.epoch,
                        "step": p.global_step,
                        "lr": self.objective.opt_G.param_groups[0]["lr"],
                        **means,
                        "images_per_s": round(ips, 3),
                    }
                )
                bar.set_postfix(G=f"{means['loss_G']:.3f}", D=f"{means['loss_D']:.3f}", img_s=f"{ips:.1f}")
                window = self.window = LogWindow()
                t0 = time.perf_counter()
            if p.global_step % opts.sample_every == 0:
                self.write_sample()
            if (
                opts.checkpoint_every
                and p.global_step % opts.checkpoint_every == 0
                and p.step_in_epoch < self.steps_per_epoch
            ):
                self.save("running")
            if self._stop_requested(flag):
                break
        return p.step_in_epoch >= self.steps_per_epoch
