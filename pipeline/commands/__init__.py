"""The command layer, the top of the application: one record per command, read by the CLI (`python -m pipeline`,
pipeline.commands.cli), the notebook API (pipeline.api), `make help` (pipeline/commands/make_help.py) and the docs'
command reference. Adding a command is one record here, a module with `run(args: argparse.Namespace) -> None`, and
(when users reach it through Make) one Makefile rule.

Plain data and the standard library only: `make help` reads this file with the system Python before any virtualenv
exists, and importing it never loads a stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Flag = tuple[str, dict[str, Any]]  # (argparse flag, add_argument keyword arguments)


@dataclass(frozen=True)
class Command:
    name: str  # `python -m pipeline <name>`
    module: str  # the module whose run(args) does the work
    help: str  # one line: the CLI's help, `make help`, the docs
    flags: tuple[Flag, ...] = ()  # flags beyond the common ones (--config, --comp, --fold, --set, --force, --debug)
    reads_folds: bool = True  # checks folds.csv still matches competition.yaml before running
    accepts_refit: bool = False  # takes --fold refit (the full-data refit)
    make_target: str | None = ""  # the Make target that runs it ("": same as name; None: CLI only)
    stage: bool = True  # False: a building block's own command (its run() only calls the block): stages may import it

    @property
    def target(self) -> str | None:
        return self.name if self.make_target == "" else self.make_target


_PLAN_FLAGS: tuple[Flag, ...] = (
    ("--time-limit", {"default": None, "help": "the kernel's time limit, e.g. 9h (default), 12h, 1h30m"}),
    ("--test-images", {"type": int, "default": None, "help": "test images the kernel predicts (default: test.csv's)"}),
    ("--slowdown", {"type": float, "default": None, "help": "kernel GPU X times slower than the logs' (default 1)"}),
)
_SCORE_WAIT: Flag = (
    "--wait",
    {"type": float, "default": None, "help": "seconds to wait for the score (default 1800; 0: no)"},
)
_BLEND: Flag = ("--blend", {"default": None, "help": "a whole blend (configs/<comp>/blend.yaml's name) instead of one "
                                                     "experiment; with --comp (Make: BLEND=<name>)"})  # fmt: skip
_SWEEP: Flag = ("--sweep", {"default": None, "help": "the sweep file (default: configs/<comp>/sweep.yaml)"})
_WEIGHTS: Flag = ("--weights", {"default": None, "choices": ("dataset", "model"),
                                 "help": "how the fold weights travel: in the dataset, or as a versioned Kaggle Model "
                                         "(Make: MODEL=1; default: kaggle.weights)"})  # fmt: skip
_ACCELERATOR: Flag = (
    "--accelerator",
    {"default": None, "help": "the kernel's GPU: t4x2 (default), l4, p100 or none (default: $KAGGLE_ACCELERATOR)"},
)

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("download", "pipeline.kaggle.download",
                "fetch the competition's files into data/raw/<comp>/ (COMP=<slug>)", reads_folds=False),
        Command("init", "pipeline.commands.init",
                "infer configs/<comp>/competition.yaml and baseline.yaml (COMP=<slug>)", reads_folds=False),
        Command("folds", "pipeline.data.folds", "stratified k-fold table shared by every experiment",
                reads_folds=False),
        Command("train", "pipeline.training.train", "fine-tune every fold (one Make target per fold, or per fold and "
                "seed of a bag: make -j N works; RUNNER=kaggle: in Kaggle notebooks)", accepts_refit=True,
                flags=(("--seed", {"type": int, "default": None,
                                   "help": "one member of a seed bag (train.seeds) only"}),)),
        Command("predict", "pipeline.inference.predict", "out-of-fold and test probabilities with TTA, per fold (a "
                "bag's: its members' mean)", accepts_refit=True),
        Command("ensemble", "pipeline.inference.ensemble", "blend the folds; CV score -> scores.json",
                flags=(("--folds", {"default": None, "help": "blend only these folds, e.g. 0 or 0,2 (CV over their "
                                                            "rows only)"}),)),
        Command("submission", "pipeline.inference.submission",
                "submissions/<comp>/<exp>.csv in sample_submission's format"),
        Command("submit", "pipeline.kaggle.submit", "validate the submission, upload it (kaggle client), wait for its "
                "score (WAIT=0: don't)", flags=(_SCORE_WAIT,), reads_folds=False),
        Command("scores", "pipeline.kaggle.leaderboard", "leaderboard scores of COMP's submissions joined to local "
                "CV -> data/runs/<comp>/leaderboard.csv", reads_folds=False),
        Command("blend", "pipeline.inference.blend", "blend COMP's experiments per configs/<comp>/blend.yaml "
                "(OOF-fitted weights, nested-CV guard)"),
        Command("cache", "pipeline.data.cache", "decode every image once into data/processed/<comp>/cache/ "
                "(every core; automatic when training)", stage=False),
        Command("bench", "pipeline.benchmarks.data_path", "data-path benchmark: loader vs naive, training efficiency, "
                "TTA overhead, growth, real epoch vs synthetic limit (table + JSON)"),
        Command("summary", "pipeline.reporting.summary", "print the experiment's scores and what this run did",
                make_target=None),
        Command("lr-find", "pipeline.training.lr_find", "LR range test on fold 0: lr_find.png + a suggested LR (usable "
                "as train.lr: auto)"),
        Command("weights", "pipeline.training.weights", "prepare the offline ImageNet Lite0 weights file",
                reads_folds=False, make_target=None, stage=False),
        Command("info", "pipeline.reporting.summary", "print facts Make needs (fold count, paths) without importing "
                "torch", reads_folds=False, make_target=None),
        Command("report", "pipeline.reporting.report", "data/runs/<comp>/<exp>/report.html: curves, CV, confusion, top "
                "losses, TTA, time plan",
                flags=(*_PLAN_FLAGS, ("--tta", {"nargs": "?", "const": "configured", "choices": ["configured", "all"],
                                                "default": None, "help": "measure each TTA view on the OOF rows "
                                                "(configured views, or all known views)"}))),  # fmt: skip
        Command("experiments", "pipeline.reporting.experiments", "every experiment of COMP: CV, fold spread, "
                "leaderboard, differing config keys -> experiments.csv"),
        Command("doctor", "pipeline.reporting.doctor", "versions, GPUs, Kaggle credentials, Kaggle Kernel or not, free "
                "disk", reads_folds=False),
        Command("plan", "pipeline.reporting.planner", "will folds x TTA views x test images fit the Kaggle Kernel time "
                "limit (LIMIT=9h; BLEND=<name>: a whole blend)?", flags=(*_PLAN_FLAGS, _BLEND), stage=False),
        Command("kaggle-bundle", "pipeline.kaggle.bundle", "data/runs/<comp>/<exp>/kaggle-bundle/ (BLEND=<name>: a "
                "whole blend's): weights, config, wheels, offline kernel",
                flags=(_BLEND, ("--user", {"default": None, "help": "Kaggle username that owns the bundle (default: "
                                                                   "login)"}), _ACCELERATOR, _WEIGHTS)),
        Command("remote-train", "pipeline.kaggle.remote", "train one fold (--fold K [--seed S]) in a Kaggle notebook "
                "and bring it home checked (make train RUNNER=kaggle)", make_target=None,
                flags=(("--seed", {"type": int, "default": None, "help": "one member of a seed bag (train.seeds) "
                                                                           "only"}),
                       ("--user", {"default": None, "help": "Kaggle username that owns the notebooks (default: "
                                                           "login)"}), _ACCELERATOR)),
        Command("kaggle-push", "pipeline.kaggle.push", "upload the bundle as a private Kaggle dataset (or a new "
                "version), push + run its kernel", reads_folds=False,
                flags=(_BLEND, ("--wait", {"type": float, "default": 900.0, "help": "seconds to wait for Kaggle to "
                                                                                  "process the dataset"}),
                       ("--message", {"default": None, "help": "the dataset version's notes (default: experiment, "
                                                               "CV, commit)"}), _WEIGHTS)),
        Command("kaggle-wheels", "pipeline.kaggle.wheels_kernel", "build on Kaggle (a notebook with internet on) the "
                "compiled wheels no index has for the Kernel's Python; kaggle-bundle attaches it (kernel_sources)",
                reads_folds=False,
                flags=(("--packages", {"default": None, "help": "name==version ... to build (Make: PACKAGES=; default: "
                                                                "the compiled wheels that cannot be fetched)"}),
                       ("--user", {"default": None, "help": "Kaggle username that owns the notebook (default: "
                                                           "login)"}),
                       ("--wait", {"type": float, "default": None, "help": "seconds to wait for its run (default "
                                                                           "3600)"}))),
        Command("kaggle-submit", "pipeline.kaggle.submit_kernel", "code competitions, after kaggle-push: wait for the "
                "kernel's run, submit its output, wait for the score", reads_folds=False,
                flags=(_BLEND, _SCORE_WAIT, ("--kernel-wait", {"type": float, "default": 10800.0,
                                                               "help": "seconds to wait for the kernel's run"}),
                       ("--message", {"default": None, "help": "the submission's description (default: experiment, "
                                                               "CV, commit)"}),
                       ("--no-follow", {"action": "store_true", "help": "do not stream the kernel's log while it "
                                                                       "runs"}))),
        Command("sweep", "pipeline.tuning.sweep", "Optuna sweep per SWEEP=configs/<comp>/sweep.yaml: one fold (or "
                "SAMPLE) per trial, resumable", flags=(_SWEEP,)),
        Command("sweep-best", "pipeline.tuning.sweep", "write the sweep's best trial as "
                "configs/<comp>/<name>-best.yaml (then make all CONFIG=...)", flags=(_SWEEP,)),
        Command("pseudo", "pipeline.training.pseudo", "write configs/<comp>/<exp>-pseudo.yaml "
                "(train.pseudo.from=FROM; NAME=) and run its chain (make all)",
                flags=(("--from", {"dest": "source", "default": None, "help": "the experiment or blend whose test "
                                                                            "predictions label"}),
                       ("--name", {"default": None, "help": "the new experiment's name (default: <exp>-pseudo, then "
                                                            "-pseudo2, ...)"}))),
        Command("mlflow-ui", "pipeline.reporting.tracking", "MLflow's UI on 127.0.0.1 over data/mlruns (TRACK=mlflow "
                "runs; needs the full mlflow package)", stage=False,
                flags=(("--port", {"type": int, "default": 5000, "help": "port on 127.0.0.1 (default 5000)"}),)),
        Command("kernel-predict", "pipeline.commands.kernel_predict", "inside a Kaggle Kernel: predict, ensemble and "
                "write /kaggle/working/submission.csv from a bundle (the bundle's kernel.py runs this)",
                reads_folds=False, make_target=None,
                flags=(("--bundle", {"default": None, "help": "the bundle folder (bundle.json)"}),)),
    )
}  # fmt: skip
