"""The only module that builds artifact paths. Fixed names, no timestamps: Make depends on them.

    data/raw/<comp>/                 the competition's files, never modified (+ .complete stamp)
    data/processed/<comp>/           folds.csv and other derived tables
    data/runs/<comp>/<exp>/          fold<k>/..., refit/... (make refit), scores.json, resolved config
                                     (a seed bag, train.seeds: fold<k>/seed<s>/... per member, plus fold<k>/'s
                                     averaged oof.csv, test.csv and predict.json)
    submissions/<comp>/<exp>.csv
    data/runs/<comp>/<exp>/kaggle-bundle/{dataset,kernel}/   what kaggle-bundle builds and kaggle-push uploads
    data/runs/<comp>/blend/<name>/kaggle-bundle/{dataset,kernel}/   the same for a whole blend (BLEND=<name>)

Inside a Kaggle Kernel the competition's files are read where Kaggle mounts them (today
/kaggle/input/competitions/<comp>, formerly /kaggle/input/<comp>: see `mounted_competition`) and everything
this pipeline writes goes under /kaggle/working. A sample run (SAMPLE=N) gets its own folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KAGGLE_INPUT = Path(os.environ.get("KAGGLE_INPUT_ROOT", "/kaggle/input"))
KAGGLE_WORKING = Path(os.environ.get("KAGGLE_WORKING_ROOT", "/kaggle/working"))
REFIT = -1  # the fold id of the full-data refit (`make refit`): every training row, folder <exp>/refit/


def in_kaggle_kernel() -> bool:
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE")) or KAGGLE_WORKING.is_dir() and KAGGLE_INPUT.is_dir()


def project_root() -> Path:
    """Where data/ and submissions/ live: $PIPELINE_ROOT, /kaggle/working in a Kernel, else the cwd."""
    if os.environ.get("PIPELINE_ROOT"):
        return Path(os.environ["PIPELINE_ROOT"])
    if in_kaggle_kernel():
        return KAGGLE_WORKING
    return Path.cwd()


def _holds_files(folder: Path) -> bool:
    """A mounted competition: a folder with at least one visible entry that is not a kaggle-bundle dataset."""
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:  # not a folder, or unreadable
        return False
    return any(not n.startswith(".") for n in names) and "bundle.json" not in names


def mounted_competition(comp: str) -> Path | None:
    """Where a Kaggle Kernel mounts competition `comp`, or None outside a Kernel / when it is not an input.

    Kaggle mounts competitions at <input>/competitions/<comp> today and at <input>/<comp> in older kernels; other
    sources sit one or two levels deeper (<input>/datasets/<owner>/<slug>). The first candidate, in that order,
    that holds files wins.
    """
    if not KAGGLE_INPUT.is_dir():
        return None
    candidates = [KAGGLE_INPUT / comp, KAGGLE_INPUT / "competitions" / comp]
    candidates += sorted(KAGGLE_INPUT.glob(f"*/{comp}")) + sorted(KAGGLE_INPUT.glob(f"*/*/{comp}"))
    return next((folder for folder in dict.fromkeys(candidates) if _holds_files(folder)), None)


def local_raw_dir(comp: str) -> Path:
    """data/raw/<comp> under the project root: where download writes and hand-placed data is adopted."""
    return project_root() / "data" / "raw" / comp


def raw_dir(comp: str) -> Path:
    """The competition's files: the Kernel's mount when there is one (`mounted_competition`), else data/raw/<comp>."""
    return mounted_competition(comp) or local_raw_dir(comp)


def weights_dir() -> Path:
    """A local weights cache for offline machines ($PIPELINE_WEIGHTS_DIR, else data/weights)."""
    return Path(os.environ.get("PIPELINE_WEIGHTS_DIR") or project_root() / "data" / "weights")


def bench_dir() -> Path:
    """`make bench`: generated images, their cache and bench.json (data/bench/)."""
    return project_root() / "data" / "bench"


def bench_images() -> Path:
    return bench_dir() / "images"


def bench_cache(side: int) -> Path:
    return bench_dir() / "cache" / f"{side}px"


def bench_json() -> Path:
    return bench_dir() / "bench.json"


def bench_scale_dir() -> Path:
    """`make bench-scale`: one project folder per (layout, N) under data/bench/scale/, and scale.json."""
    return bench_dir() / "scale"


def bench_scale_json() -> Path:
    return bench_scale_dir() / "scale.json"


def experiment_config(comp: str, exp: str) -> Path:
    """configs/<comp>/<exp>.yaml: an experiment's (or a sweep's, a pseudo round's) config file."""
    return configs_dir(comp) / f"{exp}.yaml"


def blend_config(comp: str) -> Path:
    """configs/<comp>/blend.yaml: the competition's blend."""
    return configs_dir(comp) / "blend.yaml"


def configs_dir(comp: str) -> Path:
    return project_root() / "configs" / comp


@dataclass(frozen=True)
class Paths:
    comp: str
    exp: str = ""
    sample: int = 0
    seed: int | None = None  # a seed bag's member (pipeline.core.bag): its fold files live in fold<k>/seed<s>/

    def member(self, seed: int | None) -> Paths:
        """The paths of bag member `seed`: every fold-level file under fold<k>/seed<s>/ (None: the fold's own)."""
        return Paths(self.comp, self.exp, self.sample, seed)

    def member_dir(self, fold: int, seed: int) -> Path:
        return self.member(seed).fold_dir(fold)

    @property
    def _suffix(self) -> str:
        return f"-sample{self.sample}" if self.sample else ""

    # competition level
    @property
    def raw(self) -> Path:
        return raw_dir(self.comp)

    @property
    def raw_stamp(self) -> Path:
        return self.raw / ".complete"

    @property
    def processed(self) -> Path:
        base = project_root() / "data" / "processed" / self.comp
        return base / f"sample{self.sample}" if self.sample else base

    @property
    def folds_csv(self) -> Path:
        return self.processed / "folds.csv"

    @property
    def folds_record(self) -> Path:
        """What produced folds.csv: the fold settings and a digest of the train table (pipeline.data.folds)."""
        return self.processed / "folds.json"

    @property
    def checked(self) -> Path:
        """Checks of the image listing already made, keyed by the listing's mtimes and sizes (pipeline.data.listing)."""
        return self.processed / "checked.json"

    @property
    def test_csv(self) -> Path:
        """The resolved test listing (id, file) that every experiment predicts, in submission order."""
        return self.processed / "test.csv"

    # experiment level
    @property
    def run(self) -> Path:
        return project_root() / "data" / "runs" / self.comp / f"{self.exp}{self._suffix}"

    @property
    def overrides_stamp(self) -> Path:
        """Make's record of the last SET= overrides (written by the Makefile only, rewritten when they change), so a
        no-op `make all SET=...` sees every stage current without starting Python for each."""
        return self.run / ".overrides"

    def fold_dir(self, fold: int) -> Path:
        """fold<k>/, or refit/ for the full-data refit (fold id REFIT): the same file names inside; a bag member's
        fold<k>/seed<s>/."""
        folder = self.run / ("refit" if fold == REFIT else f"fold{fold}")
        return folder if self.seed is None else folder / f"seed{self.seed}"

    def weights(self, fold: int) -> Path:
        return self.fold_dir(fold) / "model.safetensors"

    def fold_lock(self, fold: int) -> Path:
        """Held by the process working on this fold (pipeline.core.locks)."""
        return self.fold_dir(fold) / ".lock"

    def checkpoint(self, fold: int) -> Path:
        return self.fold_dir(fold) / "work" / "last.pt"

    def train_log(self, fold: int) -> Path:
        return self.fold_dir(fold) / "log.csv"

    def oof(self, fold: int) -> Path:
        return self.fold_dir(fold) / "oof.csv"

    def test_probs(self, fold: int) -> Path:
        return self.fold_dir(fold) / "test.csv"

    def oof_by_view(self, fold: int) -> Path:
        """OOF probabilities of single TTA views (id, view, classes): predict's under tta.views auto, report's
        with TTA=1/all (pipeline.inference.view_scores)."""
        return self.fold_dir(fold) / "oof_by_view.csv"

    def oof_by_view_stamp(self, fold: int) -> Path:
        """What oof_by_view.csv was computed from (fingerprint, views) and how long it took (images, seconds)."""
        return self.fold_dir(fold) / "oof_by_view.json"

    def predict_marker(self, fold: int) -> Path:
        """predict's marker, written last: training fingerprint, views and the digests of the files it vouches for."""
        return self.fold_dir(fold) / "predict.json"

    def test_by_view(self, fold: int) -> Path:
        return self.fold_dir(fold) / "test_by_view.csv"

    @property
    def resolved_config(self) -> Path:
        return self.run / "config.yaml"

    @property
    def oof_all(self) -> Path:
        return self.run / "oof.csv"

    @property
    def test_blend(self) -> Path:
        return self.run / "test.csv"

    @property
    def scores(self) -> Path:
        return self.run / "scores.json"

    @property
    def tta_choice(self) -> Path:
        """tta.views: auto: the views ensemble chose (with the training fingerprint); fold files then hold them."""
        return self.run / "tta_views.json"

    @property
    def thresholds(self) -> Path:
        """Per-label thresholds (multi-label) or cut points (ordinal) fitted on all OOF rows by ensemble."""
        return self.run / "thresholds.json"

    @property
    def lr_find_json(self) -> Path:
        """The LR range test's losses and suggested LR (written by lr-find; `train.lr: auto` reads it)."""
        return self.run / "lr_find.json"

    def oof_plain(self, fold: int) -> Path:
        """Validation probabilities of the final weights without TTA (written by train)."""
        return self.fold_dir(fold) / "oof_plain.csv"

    @property
    def lr_find_png(self) -> Path:
        return self.run / "lr_find.png"

    @property
    def report_html(self) -> Path:
        return self.run / "report.html"

    def report_png(self, name: str) -> Path:
        """The report's plots sit next to report.html, so the folder can be opened or copied as is."""
        return self.run / f"report_{name}.png"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files synced from this run's files (tracking: tensorboard): fold<k>/, experiment/."""
        return self.run / "tb"

    # competition level, across experiments
    @property
    def runs(self) -> Path:
        """data/runs/<comp>/: one folder per experiment, plus the competition's cross-experiment tables."""
        return project_root() / "data" / "runs" / self.comp

    def all_fold_weights(self) -> list[Path]:
        """Every experiment's fold weights that were trained on this competition's folds.csv (same sample size)."""
        found = sorted(self.runs.glob(f"*{self._suffix}/fold*/model.safetensors"))
        found += sorted(self.runs.glob(f"*{self._suffix}/fold*/seed*/model.safetensors"))  # seed bags' members
        return [p for p in found if self.sample or "-sample" not in str(p.relative_to(self.runs)).split("/")[0]]

    @property
    def leaderboard_csv(self) -> Path:
        return self.runs / "leaderboard.csv"

    @property
    def experiments_csv(self) -> Path:
        return self.runs / "experiments.csv"

    def blend_dir(self, name: str) -> Path:
        """A blend of several experiments: data/runs/<comp>/blend/<name>/."""
        return project_root() / "data" / "runs" / self.comp / "blend" / name

    def blend_scores(self, name: str) -> Path:
        """make blend's scores.json: what it chose (`chosen`, `combine`, `weights`) and the members' file digests."""
        return self.blend_dir(name) / "scores.json"

    def blend_oof(self, name: str) -> Path:
        return self.blend_dir(name) / "oof.csv"

    def blend_test(self, name: str) -> Path:
        """The blend's test probabilities (id + one column per class)."""
        return self.blend_dir(name) / "test.csv"

    # sweeps (pipeline.tuning.sweep): data/runs/<comp>/sweeps/<name>/
    def sweep_dir(self, name: str) -> Path:
        return self.runs / "sweeps" / name

    def sweep_lock(self, name: str) -> Path:
        """Held by the process running this sweep (pipeline.core.locks)."""
        return self.sweep_dir(name) / ".lock"

    def sweep_study(self, name: str) -> Path:
        """The Optuna study (SQLite): every trial's parameters, per-epoch scores and state; a re-run resumes it."""
        return self.sweep_dir(name) / "study.db"

    def sweep_table(self, name: str) -> Path:
        return self.sweep_dir(name) / "trials.csv"

    def sweep_plot(self, name: str) -> Path:
        return self.sweep_dir(name) / "trials.png"

    def sweep_trial_names(self) -> set[str]:
        """The run names of every sweep's trials (their experiment yamls), to tell trial runs from experiments."""
        return {path.stem for path in self.runs.glob(f"sweeps/*/configs/{self.comp}/*.yaml")}

    def sweep_trial_config(self, name: str, run_name: str) -> Path:
        """A trial's experiment yaml. It sits in a folder named after the competition, beside a link to
        competition.yaml, so the trial loads like any experiment and gets its own run folder (runs/<comp>/<run>)."""
        return self.sweep_dir(name) / "configs" / self.comp / f"{run_name}.yaml"

    @property
    def submission(self) -> Path:
        return project_root() / "submissions" / self.comp / f"{self.exp}{self._suffix}.csv"

    # Kaggle Kernel bundle (pipeline.kaggle.bundle, pipeline.kaggle.push)
    @property
    def kaggle_bundle(self) -> Path:
        """data/runs/<comp>/<exp>/kaggle-bundle/: dataset/ (uploaded as a Kaggle dataset) and kernel/ (pushed)."""
        return self.run / "kaggle-bundle"

    @property
    def kaggle_dataset(self) -> Path:
        """The folder uploaded as a Kaggle dataset: flat (Kaggle skips sub-folders), with bundle.json listing it."""
        return self.kaggle_bundle / "dataset"

    @property
    def kaggle_manifest(self) -> Path:
        return self.kaggle_dataset / "bundle.json"

    @property
    def kaggle_kernel(self) -> Path:
        """The inference kernel: kernel.py + kernel-metadata.json."""
        return self.kaggle_bundle / "kernel"

    # RUNNER=kaggle (pipeline.kaggle.remote): units trained in Kaggle notebooks
    @property
    def kaggle_train(self) -> Path:
        """data/runs/<comp>/<exp>/kaggle-train/: the training dataset (dataset/) every unit's notebook mounts, and
        what was uploaded of it (push.json)."""
        return self.run / "kaggle-train"

    def remote_state(self, fold: int) -> Path:
        """A remote unit's state (kernel, version, session, nonce): fold<k>/[seed<s>/]remote.json; Ctrl-C keeps it,
        so the next make re-attaches to the running notebook."""
        return self.fold_dir(fold) / "remote.json"

    def remote_work(self, fold: int) -> Path:
        """Where a remote unit's kernel folder and downloads are staged before they land (fold<k>/.remote/)."""
        return self.fold_dir(fold) / ".remote"

    @property
    def kaggle_pushed(self) -> Path:
        """What kaggle-push last uploaded (dataset ref, file digests): outside the bundle, so a rebuild keeps it."""
        return self.run / "kaggle-push.json"


@dataclass(frozen=True)
class BundlePlace:
    """Where one Kaggle bundle lives (an experiment's or a blend's): what kaggle-bundle builds, kaggle-push uploads
    and records, and kaggle-submit reads."""

    folder: Path  # .../kaggle-bundle/
    pushed: Path  # kaggle-push.json, beside the bundle so a rebuild keeps it
    kernel_output: Path  # a failed kernel run's log (kaggle-submit)

    @property
    def dataset(self) -> Path:
        return self.folder / "dataset"

    @property
    def manifest(self) -> Path:
        return self.dataset / "bundle.json"

    @property
    def kernel(self) -> Path:
        return self.folder / "kernel"

    @property
    def model(self) -> Path:
        """The fold weights when they travel as a Kaggle Model (kaggle.weights: model), beside dataset/."""
        return self.folder / "model"


def bundle_place(out: Paths) -> BundlePlace:
    """An experiment's bundle: data/runs/<comp>/<exp>/kaggle-bundle/ (the Paths.kaggle_* properties)."""
    return BundlePlace(out.kaggle_bundle, out.kaggle_pushed, out.run / "kaggle-kernel-output")


def kaggle_wheels_dir(comp: str) -> Path:
    """make kaggle-wheels: data/runs/<comp>/kaggle-wheels/ (kernel/, output/, kaggle-wheels.json): the utility
    notebook that builds on Kaggle the wheels no index has for the Kernel's Python."""
    return project_root() / "data" / "runs" / comp / "kaggle-wheels"


def blend_bundle_place(comp: str, name: str) -> BundlePlace:
    """A whole blend's bundle: data/runs/<comp>/blend/<name>/kaggle-bundle/ (make kaggle-bundle BLEND=<name>)."""
    run = Paths(comp).blend_dir(name)
    return BundlePlace(run / "kaggle-bundle", run / "kaggle-push.json", run / "kaggle-kernel-output")


def mlflow_dir() -> Path:
    """MLflow's local store (tracking: mlflow): data/mlruns/mlflow.db (SQLite) and data/mlruns/artifacts/."""
    return project_root() / "data" / "mlruns"


def for_config(cfg) -> Paths:  # noqa: ANN001 - Config, imported lazily to keep this module light
    return Paths(cfg.comp, cfg.exp, cfg.sample)
