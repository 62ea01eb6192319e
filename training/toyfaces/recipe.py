"""`distill toyfaces recipe`: re-create the shipped ``toyfaces-age`` model from nothing, with fixed seeds.

Every stage is the product's own, run in order (the attribute model, the teacher, the age direction,
10,000 pairs, the adults/artifacts filter, the student, its export (with sample inputs), the teacher's
report and the evaluation): the pipeline's stages as functions with their options objects
(``run_fit(FitOptions)``, ``make_pairs``, ``run_filter``, ``trainer.train``, ``export_entry``, ``evaluate``),
the toy domain's own ones as ``distill toyfaces`` commands. A stage whose output exists is skipped and the
training stages resume from their checkpoints, so an interrupted recipe is re-run with the same command.
``OUT/recipe.json`` records each stage's call and options (or command) and wall-clock time.

    distill toyfaces recipe                         # the shipped model (hours on 2 cores, see README)
    distill toyfaces recipe --setting tiny --out /tmp/r --model-zoo /tmp/r/zoo   # a minute: the smoke test
    distill toyfaces recipe --teacher-steps 20000 --redo-from direction    # train the teacher further, rebuild the rest
    distill toyfaces recipe --setting full-strength    # the strength dial, toyfaces-age-strength (same teacher)
    distill toyfaces recipe --setting full-multi       # four edits in one student, toyfaces-multi (same teacher)
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_json
from core.errors import DistillError, file_errors
from core.runfiles import CHECKPOINT, RUN_JSON
from training.toyfaces.attributes import ADULT_AGE, QUALITY_INDEX
from training.toyfaces.renderer import ATTRIBUTES

BASE_STUDENT = ("--ngf", "24", "--lambda-l1", "10", "--residual")
CLEAN_STUDENT = ("--norm", "none", "--ema", "0.995", "--lambda-gan", "0.1", "--lambda-feat", "1")


@dataclass(frozen=True)
class Setting:
    """Every size, step count and seed of one recipe setting."""

    name: str = "toyfaces-age"
    resolution: int = 128
    attribute_faces: int = 8000
    attribute_epochs: int = 10
    # The shipped teacher: 10,016 steps (about 65 minutes on 2 shared CPU cores, bf16) warm-started from the previous
    # shipped one (git show 7a1820b:model_zoo/toyfaces-age/teacher.pt: 19,547 steps, itself warm-started; see README)
    teacher_steps: int = 10016
    teacher_channels: str | None = None  # None: the teacher trainer's default
    teacher_batch: int = 8
    teacher_perceptual: float = 0.0
    teacher_attribute_weight: float = 0.0
    teacher_init: str | None = None  # warm start from this teacher.pt (same architecture)
    fit_samples: int = 2000
    fit_check: int = 200
    truncation: float = 0.8
    layers: str = "0:12"
    alpha: float | None = (
        9.553  # the shipped fit's suggestion (2 std of the samples along it); None: use the fit's
    )
    alpha_range: str | None = (
        None  # "LO:HI": pairs over a range of strengths (relative to alpha) for a conditional student
    )
    # Several edits in one student: these attributes' directions fitted together (`distill direction fit-set`,
    # fit_mode), pairs with a strength vector over each edit's -1:1, a student of the K edits.
    edits: tuple[str, ...] = ()
    fit_mode: str = "joint"
    pairs: int = 10_000
    keep_age: float = ADULT_AGE  # adults only, as the seed system's domain filter
    keep_quality: float = 0.5
    student_preset: str = "slim"
    # No instance norm (its per-picture statistics let the net plant a fixed-pixel blemish), a moving average of G
    # for the export, the adversarial terms lowered against L1 and a linear lr decay over the last steps: the
    # cleanest of the variants measured side by side in the README ("A student as clean as its teacher"), at ngf 24
    # (the widest within twice the served latency of the ngf-16 student shipped before), upsampling by
    # resize-convolution (the transposed convs drew a fine chequer in the hair).
    student_options: tuple[str, ...] = (
        *BASE_STUDENT,
        *CLEAN_STUDENT,
        "--upsample",
        "resize",
        "--lr-decay-steps",
        "3000",
    )
    student_augment: str = "shift=2,sharpness=0.5,noise=0.2,jpeg=0.2"
    # The shipped student: 3,000 steps warm-started (--student-init) from the previous shipped model.onnx, its transposed
    # convs turned into resize-convs (git show d829ab6:model_zoo/toyfaces-age/model.onnx: ngf 24, 2,000 steps widened
    # from 00b4dab's ngf-16 student, 2,500 steps without norms, itself from 45d8d18's, 20,000 steps with NVIDIA's
    # instance norm folded into its convs).
    student_steps: int = 3000
    student_init: str | None = (
        None  # a new student run starts from these weights (a generator .pt or a model.onnx)
    )
    student_batch: int = 4
    demo_renders: int = (
        4  # clean renders shipped in samples/ beside the teacher samples (the domain's "photographs")
    )
    clean_renders: int = (
        300  # held-out clean adult renders in `distill evaluate` (against the renderer's true edit)
    )
    clean_age_change: float | None = (
        None  # None: the teacher's measured age change (an untrained teacher has none)
    )
    teacher_eval: int = 1000
    eval_num: int = 500
    legacy_num: int = 20
    legacy_steps: int = 200
    timing_num: int = 100
    seed: int = 0


SETTINGS = {
    "full": Setting(),
    "tiny": Setting(
        name="toyfaces-age-tiny",
        resolution=32,
        attribute_faces=64,
        attribute_epochs=1,
        teacher_steps=4,
        teacher_channels="4:32,8:32,16:16,32:8",
        teacher_batch=4,
        fit_samples=48,
        fit_check=8,
        layers="0:8",
        alpha=None,
        pairs=24,
        keep_age=0.0,
        keep_quality=0.0,
        student_preset="tiny",
        student_options=("--norm", "none", "--ema", "0.9"),
        student_steps=4,
        student_batch=2,
        teacher_eval=16,
        eval_num=6,
        legacy_num=1,
        legacy_steps=3,
        timing_num=2,
        demo_renders=2,
        clean_renders=4,
        clean_age_change=0.3,
    ),
}
# A strength dial: pairs over strengths -1.5..1.5 (1.0 = alpha) and a strength-conditioned student
# (residual scaled by the strength, a learned modulation of the bottleneck: the best of scale, plane and modulation
# at equal steps in the README's measurement), as its own entry beside toyfaces-age.
CONDITIONAL_OPTIONS = ("--condition", "modulation")
# Its shipped student: 5,000 steps on all 10,000 seeds (7,093 pairs kept), then resumed to 7,000 (the lr decay over the
# last 2,500 steps restarting at 0.8 of the peak), warm-started from the previous shipped one
# (git show 8722cd0:model_zoo/toyfaces-age-strength/model.onnx: 2,500 steps on the even seeds with resize-convs, from
# 1638b83's ngf-24 transposed dial, 2,000 steps widened from 00b4dab's ngf-16 dial, 3,000 steps without norms from
# 45d8d18's, 10,000 steps with NVIDIA's instance norm).
SETTINGS["full-strength"] = replace(
    SETTINGS["full"],
    name="toyfaces-age-strength",
    alpha_range="-1.5:1.5",
    student_options=(
        *BASE_STUDENT,
        *CLEAN_STUDENT,
        "--upsample",
        "resize",
        "--lr-decay-steps",
        "2500",
        *CONDITIONAL_OPTIONS,
    ),
    student_steps=7000,
)
SETTINGS["tiny-strength"] = replace(
    SETTINGS["tiny"],
    name="toyfaces-age-strength-tiny",
    alpha_range="-1.5:1.5",
    student_options=("--residual", *CONDITIONAL_OPTIONS),
)
# Four edits in one student (age, smile, hair colour, glasses): jointly fitted directions (the least leak of the
# marginal, conditional and joint fits measured in the README), each pair with 0, 1 or 2 of them active, the
# strength dial's student and options, warm-started from the shipped dial (its age edit becomes the first). The
# shipped one: 14,000 steps (stopped at 2,075 and 5,620 to look and lengthen it, resumed to 10,500 with the lr
# decaying over the last 2,500, then resumed to 14,000 with the decay restarting from the peak).
MULTI_EDITS = ("age", "smile", "hair_color", "glasses")
SETTINGS["full-multi"] = replace(
    SETTINGS["full-strength"],
    name="toyfaces-multi",
    alpha_range=None,
    edits=MULTI_EDITS,
    student_init="model_zoo/toyfaces-age-strength/model.onnx",
    student_steps=14000,
    eval_num=100,  # 23 strength vectors each: every edit alone at four strengths, every pair, all zeros
)
SETTINGS["tiny-multi"] = replace(
    SETTINGS["tiny-strength"], name="toyfaces-multi-tiny", alpha_range=None, edits=("age", "smile")
)


class Recipe:
    """Runs the stages of a setting into a work folder and a model-zoo root."""

    def __init__(
        self, setting: Setting, out: Path, zoo: Path, attribute_model: Path | None = None, threads: int = 0
    ) -> None:
        self.s, self.out, self.zoo, self.threads = setting, Path(out), Path(zoo), threads
        self.entry = self.zoo / setting.name
        self.own_attributes = attribute_model is None
        self.attributes = (
            Path(attribute_model) if attribute_model else self.zoo / "toyfaces-attributes" / "attributes.onnx"
        )
        self.teacher = self.out / "teacher"
        self.direction = self.out / "age.npy"
        self.directions = self.out / "directions"  # several edits': NAME.npy each, leak.md
        # a strength dial and a multi-edit student share the teacher (and the dial the direction) only
        tail = "-multi" if setting.edits else "-strength" if setting.alpha_range else ""
        self.pairs = self.out / f"pairs{tail}"
        self.student = self.out / f"student{tail}"
        self.log: list[dict[str, Any]] = []
        self.earlier = self._earlier_seconds()

    # -- plumbing ------------------------------------------------------------------------------------
    def _run(self, stage: str, argv: list[str], done: bool = False) -> None:
        """A ``distill toyfaces`` command (the toy domain's own stages)."""
        from training.options import run_command
        from training.toyfaces.commands import register

        def command() -> None:
            if run_command(register, argv) != 0:
                raise DistillError(f"`distill {shlex.join(argv)}` did not finish")

        self._stage(stage, {"command": "distill " + shlex.join(argv)}, command, done)

    def _call(
        self,
        stage: str,
        func: Callable[[Any], Any],
        opts: Any,
        done: bool = False,
        action: Callable[[], Any] | None = None,
    ) -> None:
        """A pipeline stage: ``func(opts)`` (or ``action``, which calls it), recorded with its options."""
        record = {
            "call": f"{func.__module__}.{func.__name__}",
            "options": json.loads(json.dumps(asdict(opts), default=str)),
        }

        def call() -> None:
            with file_errors(getattr(opts, "out", None) or getattr(opts, "dataset", self.out)):
                (action or (lambda: func(opts)))()

        self._stage(stage, record, call, done)

    def _stage(self, stage: str, record: dict[str, Any], action: Callable[[], Any], done: bool) -> None:
        record = {"stage": stage, **record}
        what = (
            record.get("command")
            or f"{record['call']}({', '.join(f'{k}={v!r}' for k, v in record['options'].items())})"
        )
        earlier = self.earlier.get(stage, 0.0)
        if done:
            print(f"\n[{stage}] done already, skipped: {what}", flush=True)
            self.log.append({**record, "seconds": earlier})
            return
        print(f"\n[{stage}] {'$ ' if 'command' in record else ''}{what}", flush=True)
        t0 = time.monotonic()
        try:
            action()
        except DistillError as e:
            raise DistillError(
                f"recipe stopped at stage {stage!r}: {e}; fix it and re-run the recipe to resume"
            ) from e
        self.log.append({**record, "seconds": round(earlier + time.monotonic() - t0, 1)})
        self._write_log()

    def _earlier_seconds(self) -> dict[str, float]:
        """Seconds each stage took in earlier (interrupted or finished) runs of this recipe, from recipe.json."""
        path = self.out / "recipe.json"
        if not path.is_file():
            return {}
        try:
            stages = json.loads(path.read_text(encoding="utf-8")).get("stages", [])
            return {r["stage"]: float(r.get("seconds", 0.0)) for r in stages}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return {}

    def _write_log(self) -> None:
        logged = {r["stage"] for r in self.log}
        stages = self.log + [{"stage": k, "seconds": v} for k, v in self.earlier.items() if k not in logged]
        atomic_write_json(
            self.out / "recipe.json",
            {
                "setting": asdict(self.s),
                "stages": stages,
                "seconds_total": round(sum(r["seconds"] for r in stages), 1),
            },
        )

    def _threads(self) -> list[str]:
        return ["--threads", str(self.threads)] if self.threads else []

    # -- stages --------------------------------------------------------------------------------------
    def attribute_model(self) -> None:
        s = self.s
        self._run(
            "attributes",
            [
                "toyfaces",
                "train-attributes",
                "--out",
                str(self.attributes.parent),
                "--faces",
                str(s.attribute_faces),
                "--epochs",
                str(s.attribute_epochs),
                "--seed",
                str(s.seed),
                *self._threads(),
            ],
            done=self.attributes.is_file(),
        )

    def train_teacher(self) -> None:
        s = self.s
        argv = [
            "toyfaces",
            "train-teacher",
            "--out",
            str(self.teacher),
            "--steps",
            str(s.teacher_steps),
            "--resolution",
            str(s.resolution),
            "--batch",
            str(s.teacher_batch),
            "--seed",
            str(s.seed),
            "--perceptual",
            str(s.teacher_perceptual),
            "--attribute-weight",
            str(s.teacher_attribute_weight),
            "--attribute-model",
            str(self.attributes),
            "--checkpoint-every",
            "250",
            "--eval-every",
            "250",
            *self._threads(),
        ]
        if s.teacher_channels:
            argv += ["--channels", s.teacher_channels]
        if s.teacher_init:
            argv += ["--init", s.teacher_init]
        if (self.teacher / CHECKPOINT).is_file():
            argv.append("--resume")
        self._run("teacher", argv)

    def outputs(self) -> dict[str, list[Path]]:
        """What each re-doable stage writes (and everything after it depends on), in pipeline order."""
        return {
            "direction": [self.directions]
            if self.s.edits
            else [self.direction, self.direction.with_suffix(".json")],
            "pairs": [self.pairs],
            "student": [self.student],
            "export": [self.entry],
        }

    def redo_from(self, stage: str) -> None:
        """Remove the outputs of ``stage`` and of every later stage, so the recipe re-creates them."""
        stages = list(self.outputs())
        for name in stages[stages.index(stage) :]:
            for path in self.outputs()[name]:
                if path.is_dir():
                    print(f"--redo-from {stage}: removing {path}/")
                    shutil.rmtree(path)
                elif path.exists():
                    print(f"--redo-from {stage}: removing {path}")
                    path.unlink()

    def check_direction_is_current(self) -> None:
        """A direction fitted on an older teacher (trained further since) would make stale pairs: refuse."""
        from training.directions import file_sha256, read_sidecar

        direction = self.directions / f"{self.s.edits[0]}.npy" if self.s.edits else self.direction
        side = read_sidecar(direction) or {}
        fitted_on = (side.get("generator") or {}).get("sha256")
        if fitted_on and fitted_on != file_sha256(self.teacher / "teacher.pt"):
            raise DistillError(
                f"{direction}: fitted on an earlier state of {self.teacher / 'teacher.pt'}; "
                "re-run the recipe with --redo-from direction to rebuild everything after the teacher"
            )

    def fit_direction(self) -> None:
        from training.directions import FitOptions, parse_layers, run_fit

        s = self.s
        if s.edits:
            self.fit_directions()
            return
        if self.direction.is_file():
            self.check_direction_is_current()
        self._call(
            "direction",
            run_fit,
            FitOptions(
                generator=self.teacher / "teacher.pt",
                scorer=self.attributes,
                output_index=0,
                attribute="age",
                method="all",
                num=s.fit_samples,
                check=s.fit_check,
                truncation=s.truncation,
                layers=parse_layers(s.layers),
                out=self.direction,
            ),
            done=self.direction.is_file(),
        )

    def fit_directions(self) -> None:
        """One direction per edit, fitted together so that each moves the others as little as it can."""
        from training.directions import FitSetOptions, parse_layers, run_fit_set

        s = self.s
        done = all((self.directions / f"{a}.npy").is_file() for a in s.edits)
        if done:
            self.check_direction_is_current()
        self._call(
            "direction",
            run_fit_set,
            FitSetOptions(
                generator=self.teacher / "teacher.pt",
                scorer=self.attributes,
                attribute=[f"{a}={ATTRIBUTES.index(a)}" for a in s.edits],
                out_dir=self.directions,
                mode=s.fit_mode,
                num=s.fit_samples,
                check=s.fit_check,
                truncation=s.truncation,
                layers=parse_layers(s.layers),
            ),
            done=done,
        )

    def alpha(self) -> float:
        """The setting's alpha, or the fitted direction's suggestion."""
        if self.s.alpha is not None:
            return self.s.alpha
        side = json.loads(self.direction.with_suffix(".json").read_text(encoding="utf-8"))
        return round(float(side["suggested_alpha"]), 3)

    def make_pairs(self) -> None:
        from training.directions import parse_layers
        from training.pairs import PairsOptions, edits_from_flags, make_pairs
        from training.strength import parse_range

        s = self.s
        edits = edits_from_flags([(a, self.directions / f"{a}.npy") for a in s.edits], None, None)
        opts = PairsOptions(
            generator=self.teacher / "teacher.pt",
            direction=None if edits else self.direction,
            edits=edits,
            alpha=1.0 if edits else self.alpha(),
            truncation=s.truncation,
            layers=parse_layers(s.layers),
            num=s.pairs,
            batch_size=32,
            out=self.pairs,
            alpha_range=parse_range(s.alpha_range) if s.alpha_range else None,
            shard=0,  # all of them: a recipe is one process, whatever Indexed Job it runs in
            num_shards=1,
        )
        self._call("pairs", make_pairs, opts)

    def filter_pairs(self) -> None:
        from training.filters import FilterOptions, run_filter

        self._call(
            "filter",
            run_filter,
            FilterOptions(
                dataset=self.pairs,
                scorer=self.attributes,
                on="both",
                attributes=["age=0", f"quality={QUALITY_INDEX}"],
                keep=[f"age={self.s.keep_age}:", f"quality={self.s.keep_quality}:"],
            ),
        )

    def train_student(self) -> None:
        from training.options import model_arguments
        from training.trainer import TrainOptions, train

        s = self.s
        opts = TrainOptions(
            dataset=str(self.pairs),
            out=str(self.student),
            max_steps=s.student_steps,
            workers=1,
            sample_every=max(s.student_steps // 10, 1),
        )
        resume = (self.student / CHECKPOINT).is_file()  # then the model and data options are the checkpoint's
        overrides: dict[str, Any] = {}
        if not resume:
            opts = replace(
                opts,
                preset=s.student_preset,
                batch_size=s.student_batch,
                seed=s.seed,
                augment=s.student_augment,
                init=s.student_init,
            )
            overrides = model_arguments(list(s.student_options))

        def student() -> None:
            if train(opts, overrides, resume=resume).status == "interrupted":
                raise KeyboardInterrupt

        self._call("student", train, opts, action=student)

    def demo_renders(self) -> list[str]:
        """Clean adult renders (seeds apart from every evaluated one) for the demo page: the domain's photographs."""
        from editing.images import save_image
        from training.toyfaces.clean_renders import DEMO_SEED0, adult_faces
        from training.toyfaces.renderer import render

        paths = []
        for seed, params in adult_faces(self.s.demo_renders, z_dim=128, seed0=DEMO_SEED0):
            path = self.out / "demo_renders" / f"render-{seed}.png"
            save_image(path, render(params, self.s.resolution))
            paths.append(str(path))
        return paths

    def export(self) -> None:
        from training.export import ExportOptions, export_entry

        s = self.s
        done = self._exported_from_current_student()
        self._call(
            "export",
            export_entry,
            ExportOptions(
                run=self.student,
                out=self.entry,
                variants=["int8"],
                overwrite=True,
                attribute=None if s.edits else "age",
                samples=None if done else self.demo_renders(),
                # the domain is age; quality judges the teacher's pairs (glitches), not what a student may be sent
                domain=["age"],
                description=(
                    f"toy-face edits of {', '.join(a.replace('_', ' ') for a in s.edits)} ({s.resolution} px), "
                    "each with its own strength, in one"
                    if s.edits
                    else f"toy-face aging edit ({s.resolution} px):"
                )
                + " Pix2PixHD student of a StyleGAN2 teacher trained offline on procedural faces (see "
                "training/toyfaces)",
            ),
            done=done,
        )

    def _exported_from_current_student(self) -> bool:
        """Whether the entry exists and was exported at the student run's current step (more ``--student-steps``
        on a finished recipe resume the student, and then the entry is exported again)."""
        from model_zoo.registry import get_entry

        if not (self.entry / "manifest.json").is_file():
            return False
        exported = get_entry(self.entry.name, self.zoo, verify=False).spec.training
        run = self.student / RUN_JSON
        if exported is None or exported.global_step is None or not run.is_file():
            return True
        return exported.global_step == json.loads(run.read_text())["global_step"]

    def copy_reports(self) -> None:
        """The filter's report and its pictures (score histograms, rejected pairs) beside the entry."""
        for src in self.pairs.glob("filter_*"):
            if src.is_file():
                shutil.copy2(src, self.entry / src.name)
        for name in (
            "leak.md",
            "leak.json",
        ):  # how much each edit's direction moves the others, in the teacher
            if (self.directions / name).is_file() and self.s.edits:
                shutil.copy2(self.directions / name, self.entry / f"directions_{name}")

    def evaluate_teacher(self) -> None:
        out = self.entry / "teacher_report"
        self._run(
            "teacher-report",
            [
                "toyfaces",
                "evaluate-teacher",
                "--generator",
                str(self.teacher / "teacher.pt"),
                "--direction",
                str(self.direction),
                "--scorer",
                str(self.attributes),
                "--num",
                str(self.s.teacher_eval),
                "--out",
                str(out),
                *self._threads(),
            ],
            done=(out / "report.json").is_file(),
        )

    def evaluate(self) -> None:
        from training.evaluate import EvaluateOptions, evaluate

        s = self.s
        out = self.entry / "evaluation"
        self._call(
            "evaluate",
            evaluate,
            EvaluateOptions(
                entry=str(self.entry),
                out=out,
                scorer=str(self.attributes),
                attribute="age=0",
                other=[f"{a}={i}" for i, a in enumerate(ATTRIBUTES) if a != "age"],
                num=s.eval_num,
                legacy_num=s.legacy_num,
                legacy_steps=s.legacy_steps,
                timing_num=s.timing_num,
                clean_renders=s.clean_renders,
                clean_age_change=s.clean_age_change or None,
                threads=self.threads,
            ),
            done=(out / "report.json").is_file(),
        )

    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        if self.own_attributes:
            self.attribute_model()
        elif not self.attributes.is_file():
            raise DistillError(f"--attribute-model {self.attributes}: not found; omit it to train one")
        self.train_teacher()
        self.fit_direction()
        self.make_pairs()
        self.filter_pairs()
        self.train_student()
        self.export()
        self.copy_reports()
        if (
            not self.s.edits
        ):  # the teacher's report reads the age edit's renders; directions_leak.md is the multi's
            self.evaluate_teacher()
        self.evaluate()
        self._write_log()
        total = sum(r["seconds"] for r in self.log)
        print(
            f"\nrecipe {self.s.name}: done ({time.monotonic() - t0:.0f} s this run, {total:.0f} s over all runs); "
            f"entry {self.entry}; stage times in {self.out / 'recipe.json'}"
        )
        return self.entry
