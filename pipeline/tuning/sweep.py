"""sweep: Optuna over any config keys, each trial one fold (optionally a SAMPLE=N subset); sweep-best: the winner.

Reads configs/<comp>/<exp>.yaml (the base experiment, with SET overrides for every trial) and the sweep file
(pipeline.tuning.sweep_spec). Writes under data/runs/<comp>/sweeps/<name>/ (name: `<exp>-<sweep file stem>` unless
set): study.db (the Optuna study, SQLite: a re-run resumes it), configs/<comp>/<name>-t<NNN>.yaml (each trial's
experiment), logs/<name>-t<NNN>.log (each trial's output), trials.csv and trials.png (results), and each trial's
run in its own data/runs/<comp>/<name>-t<NNN>[-sampleN]/ (pipeline.core.paths). `sweep-best` writes the best trial as
configs/<comp>/<name>-best.yaml: the base experiment plus the best parameters, ready for full CV.

Each trial is `python -m pipeline train --config <trial yaml> --fold K` in a subprocess. The sweep reads the
fold's log.csv as epochs finish and reports the validation score to Optuna (TPE sampler, median pruner); a pruned
trial gets SIGTERM (it checkpoints and stops). The objective is the metric of the saved weights on the fold's
validation rows (oof_plain.csv), maximised or minimised as pipeline.core.metrics says. A trial killed with the sweep
(SIGKILL, a lost machine) is retried with the same parameters and run folder, so its training resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from pipeline.core import artifacts, paths
from pipeline.core.config import (
    Config,
    apply_override,
    config_paths,
    dump_yaml,
    load_config,
    parse_override,
    read_yaml,
)
from pipeline.core.errors import ConfigError, UserError
from pipeline.core.locks import exclusive
from pipeline.tuning.sweep_results import write_results
from pipeline.tuning.sweep_spec import SweepSpec, check_against_config, load_spec

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5


class TrialFailed(Exception):
    """A trial's training crashed (a bug, not a user mistake): the trial is FAILED, the sweep goes on."""


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError("sweep needs Optuna: pip install 'kaggle-pipeline[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def sweep_for(args: argparse.Namespace) -> tuple[Config, SweepSpec]:
    if not args.config:
        raise UserError(f"{args.command}: --config configs/<comp>/<exp>.yaml is required (Make: CONFIG=...)")
    comp_yaml, comp, exp = config_paths(Path(args.config))
    sweep_file = Path(args.sweep or comp_yaml.parent / "sweep.yaml")
    spec = load_spec(sweep_file, f"{exp}-{sweep_file.stem}")
    check_against_config(spec, Path(args.config), args.overrides)
    return load_config(args.config, args.overrides), spec


def trial_values(base_config: Path, overrides: list[str], spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The trial's experiment yaml: the base experiment's own keys, then SET, the sample size, the trial's params."""
    values = read_yaml(base_config) if config_paths(base_config)[2] else {}
    settings = [*overrides, *([f"sample={spec.sample}"] if spec.sample else [])]
    settings += [f"{key}={json.dumps(value)}" for key, value in params.items()]
    for text in settings:
        parts, value = parse_override(text)
        apply_override(values, parts, value, text)
    return values


def write_trial_config(
    cfg: Config, spec: SweepSpec, base_config: Path, run_name: str, values: dict[str, Any]
) -> Path:  # fmt: skip
    out = paths.for_config(cfg)
    path = out.sweep_trial_config(spec.name, run_name)
    link, competition = path.parent / "competition.yaml", config_paths(base_config)[0].resolve()
    if not link.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)  # a dangling link (the competition's folder moved)
        try:  # one truth: the trial reads the competition's own file
            link.symlink_to(competition)
        except OSError:
            shutil.copyfile(competition, link)
    return artifacts.write_text(path, dump_yaml(values))


def epoch_scores(log_csv: Path, metric: str) -> list[tuple[int, float]]:
    """(epoch, validation score) per log.csv row: the better of the raw and EMA weights, as train keeps them."""
    import pandas as pd

    from pipeline.core.metrics import is_better

    if not log_csv.exists():
        return []
    rows = []
    for record in pd.read_csv(log_csv).to_dict("records"):
        value = float(record[f"valid_{metric}"])
        ema = record.get(f"valid_{metric}_ema")
        if ema is not None and ema == ema and is_better(metric, float(ema), value):
            value = float(ema)
        rows.append((int(record["epoch"]), value))
    return rows


def saved_score(trial_cfg: Config, fold: int) -> float:
    """The metric of the fold's saved weights on its validation rows (oof_plain.csv, written by train)."""
    from pipeline.core.metrics import score
    from pipeline.data.tables import encode_targets, read_csv

    out = paths.for_config(trial_cfg)
    folds = read_csv(out.folds_csv, "folds table").astype({"fold": int})
    rows = folds[folds["fold"] == fold]
    probs = read_csv(out.oof_plain(fold), "validation probabilities").set_index("id").loc[rows["id"]]
    return score(trial_cfg.metric, encode_targets(rows["label"], trial_cfg.data),
                 probs[trial_cfg.data.classes].to_numpy(dtype=float))  # fmt: skip


def _last_error(log_file: Path) -> str:
    lines = log_file.read_text(errors="replace").splitlines() if log_file.exists() else []
    errors = [line for line in lines if line.startswith("error:")]
    return errors[-1] if errors else (lines[-1] if lines else "no output")


def make_folds(config: Path, settings: list[str]) -> None:
    """The folds the trials train on, made as the trials themselves run: `python -m pipeline folds` in a subprocess."""
    command = [sys.executable, "-m", "pipeline", "folds", "--config", str(config)]
    done = subprocess.run(
        [*command, *(["--set", " ".join(settings)] if settings else [])], capture_output=True, text=True
    )
    if done.returncode:
        lines = done.stderr.strip().splitlines()
        raise UserError(lines[-1].removeprefix("error: ") if lines else f"sweep: `folds` exited {done.returncode}")


def watch(trial: Any, process: subprocess.Popen, log_csv: Path, metric: str) -> None:
    """Report each finished epoch's score; stop the training (SIGTERM: it checkpoints) when Optuna prunes it."""
    optuna = _optuna()
    reported, seen_mtime = 0, None
    while True:
        done = process.poll() is not None
        mtime = log_csv.stat().st_mtime_ns if log_csv.exists() else None
        if mtime != seen_mtime:
            seen_mtime = mtime
            for epoch, value in epoch_scores(log_csv, metric):
                if epoch > reported:
                    trial.report(value, epoch)
                    reported = epoch
                    log.info("sweep: trial %d epoch %d: valid %s %.4f", trial.number, epoch, metric, value)
                    if trial.should_prune():
                        process.send_signal(signal.SIGTERM)
                        process.wait()
                        raise optuna.TrialPruned(f"epoch {epoch}: {value:.4f} below the median of earlier trials")
        if done:
            return
        time.sleep(POLL_SECONDS)


def run_trial(trial: Any, cfg: Config, spec: SweepSpec, args: argparse.Namespace) -> float:
    params = {p.key: suggest(trial, p) for p in spec.params}
    run_name = trial.user_attrs.get("run") or f"{spec.name}-t{trial.number:03d}"
    trial.set_user_attr("run", run_name)
    values = trial_values(Path(args.config), args.overrides, spec, params)
    trial_yaml = write_trial_config(cfg, spec, Path(args.config), run_name, values)
    trial_cfg = load_config(trial_yaml)
    out = paths.for_config(trial_cfg)
    log_file = out.sweep_dir(spec.name) / "logs" / f"{run_name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log.info("sweep: trial %d (%s): %s", trial.number, run_name, ", ".join(f"{k}={v}" for k, v in params.items()))
    command = [sys.executable, "-m", "pipeline", "train", "--config", str(trial_yaml), "--fold", str(spec.fold)]
    with open(log_file, "a") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            watch(trial, process, out.train_log(spec.fold), trial_cfg.metric)
        except _optuna().TrialPruned:
            shutil.rmtree(out.checkpoint(spec.fold).parent, ignore_errors=True)  # never resumed: free the disk
            raise
        except BaseException:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # stops at the next step with a checkpoint: a retry resumes
                process.wait()
            raise
    if process.returncode == 2:
        raise UserError(f"sweep trial {trial.number} ({log_file}): {_last_error(log_file).removeprefix('error: ')}")
    if process.returncode != 0:
        trial.set_user_attr("error", f"exit {process.returncode}: {_last_error(log_file)}")
        raise TrialFailed(f"exit {process.returncode}: {_last_error(log_file)} (see {log_file})")
    return saved_score(trial_cfg, spec.fold)


def suggest(trial: Any, param: Any) -> Any:
    if param.choices is not None:
        return trial.suggest_categorical(param.key, param.choices)
    if param.is_int:
        return trial.suggest_int(param.key, param.low, param.high, step=param.step or 1, log=param.log)
    return trial.suggest_float(param.key, float(param.low), float(param.high), step=param.step, log=param.log)


def open_study(cfg: Config, spec: SweepSpec, args: argparse.Namespace, create: bool = True) -> Any:
    optuna = _optuna()
    from pipeline.core.metrics import higher_is_better

    db = paths.for_config(cfg).sweep_study(spec.name)
    if not create and not db.exists():
        raise UserError(f"{db} not found; run `make sweep CONFIG={args.config} SWEEP={spec.path}` first")
    db.parent.mkdir(parents=True, exist_ok=True)
    pruner = optuna.pruners.NopPruner() if spec.prune is None else optuna.pruners.MedianPruner(
        n_startup_trials=spec.prune["startup_trials"], n_warmup_steps=spec.prune["warmup_epochs"])  # fmt: skip
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name=spec.name, load_if_exists=True, pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=spec.seed),
                                direction="maximize" if higher_is_better(cfg.metric) else "minimize")  # fmt: skip
    identity = {"params": spec.identity(), "config": str(args.config), "set": " ".join(args.overrides),
                "fold": spec.fold, "sample": spec.sample}  # fmt: skip
    if not create:  # sweep-best reads the study as it is
        return study
    if "identity" not in study.user_attrs:
        study.set_user_attr("identity", identity)
    elif study.user_attrs["identity"] != identity:
        raise ConfigError(
            f"{spec.path}: the study in {db} was started with other params, CONFIG, SET, fold or sample; "
            f"restore them, set another name: in the sweep file, or delete {db.parent}"
        )
    return study


def retry_interrupted(study: Any) -> int:
    """Trials a killed sweep left RUNNING (or an interrupted one left FAILED): fail them, queue their params again."""
    optuna = _optuna()
    state = optuna.trial.TrialState
    retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    count = 0
    for t in study.get_trials(deepcopy=False):
        stale = t.state == state.RUNNING or (t.state == state.FAIL and t.user_attrs.get("interrupted"))
        if not stale or t.number in retried:
            continue
        if t.state == state.RUNNING:
            study._storage.set_trial_state_values(t._trial_id, state.FAIL)
        study.enqueue_trial(t.params, user_attrs={"run": t.user_attrs.get("run"), "retry_of": t.number})
        count += 1
    return count


def done_trials(study: Any) -> int:
    state = _optuna().trial.TrialState
    return sum(t.state in (state.COMPLETE, state.PRUNED) for t in study.get_trials(deepcopy=False))


def optimize(study: Any, cfg: Config, spec: SweepSpec, args: argparse.Namespace) -> None:
    """Trials until `trials:` are done (complete or pruned, resumes included) or `time:` has passed."""
    started = time.monotonic()

    def objective(trial: Any) -> float:
        try:
            return run_trial(trial, cfg, spec, args)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)  # retried with the same parameters on the next run
            raise

    failures = 0
    while spec.trials is None or done_trials(study) < spec.trials:
        if spec.time_s is not None and time.monotonic() - started >= spec.time_s:
            log.info("sweep: time budget (%ds) spent; no new trial starts", spec.time_s)
            break
        before = len(study.trials)
        study.optimize(objective, n_trials=1, catch=(TrialFailed,))
        last = study.trials[before] if len(study.trials) > before else None
        failures = failures + 1 if last is not None and last.state.name == "FAIL" else 0
        if last is not None and last.state.name == "FAIL":
            log.warning("warning: sweep trial %d failed: %s", last.number, last.user_attrs.get("error", "see its log"))
        if failures >= 3:
            raise UserError(f"sweep: 3 trials in a row failed; see {paths.for_config(cfg).sweep_dir(spec.name)}/logs/")


def best_config(cfg: Config, spec: SweepSpec, args: argparse.Namespace) -> Path:
    """configs/<comp>/<name>-best.yaml: the base experiment's keys plus the best trial's parameters."""
    study = open_study(cfg, spec, args, create=False)
    try:
        best = study.best_trial
    except ValueError:
        raise UserError(f"sweep {spec.name}: no trial has completed yet; run `make sweep` first") from None
    values = read_yaml(Path(args.config)) if config_paths(Path(args.config))[2] else {}
    for key, value in best.params.items():
        apply_override(values, key.split("."), value, key)
    path = paths.experiment_config(cfg.comp, f"{spec.name}-best")
    where = f"fold {spec.fold}" + (f", sample {spec.sample}" if spec.sample else "")
    header = f"# Best trial ({best.number}, validation {cfg.metric} {best.value:.4f} on {where}) of sweep {spec.path}"
    header += f" over {args.config}.\n"
    trial_set = study.user_attrs.get("identity", {}).get("set", "")
    if trial_set:
        header += f'# Every trial also ran with SET="{trial_set}" (not included below).\n'
    artifacts.write_text(path, header + yaml.safe_dump(values, sort_keys=False))
    return path


def run(args: argparse.Namespace) -> None:
    cfg, spec = sweep_for(args)
    out = paths.for_config(cfg)
    if args.command == "sweep-best":
        path = best_config(cfg, spec, args)
        print(f"best trial -> {path}\nfull CV: make all CONFIG={path.relative_to(paths.project_root())}")
        return
    with exclusive(out.sweep_lock(spec.name), f"sweep {spec.name}", "sweep"):  # released even on SIGKILL
        study = open_study(cfg, spec, args)
        if retried := retry_interrupted(study):
            log.info("sweep %s: resuming; %d interrupted trial(s) run again with their parameters", spec.name, retried)
        settings = [*args.overrides, *([f"sample={spec.sample}"] if spec.sample else [])]
        if not paths.for_config(load_config(args.config, settings)).folds_csv.exists():
            make_folds(args.config, settings)
        optimize(study, cfg, spec, args)
        table = write_results(study, cfg, spec)
    print(table.drop(columns=["run"]).to_string(index=False, na_rep=""))
    print(f"sweep {spec.name}: {out.sweep_table(spec.name)}, {out.sweep_plot(spec.name)}")
    if (table["state"] == "complete").any():
        best = study.best_trial
        print(f"best: trial {best.number}, {cfg.metric} {best.value:.4f}: "
              + ", ".join(f"{k}={v}" for k, v in best.params.items()))  # fmt: skip
