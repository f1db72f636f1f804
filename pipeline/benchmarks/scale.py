"""bench-scale: every stage of a synthetic photo competition at several sizes N: wall time, CPU time, peak RSS and
the growth in N of each.

For each layout (csv, folder_per_class) and N (total images: 80% train, 20% test; pipeline.benchmarks.scale_data),
a project folder data/bench/scale/<layout>-<N>/ is written and each stage runs as its own `python -m pipeline`
process (measured with os.wait4: its wall, user+system CPU and peak RSS, worker processes included):
init, folds, folds again (a stage start with nothing changed), cache (every core), the training data path (one
epoch of the cached loader against the model's own step rate on synthetic tensors), train (1 epoch, 2 folds),
predict (2 TTA views), ensemble, submission, `make all` with everything up to date, without and with SET=, `plan`
(the Kernel time plan from the measured decode and model rates), and the Kernel's test prediction (no training
cache: the test images decoded once into its test cache, both folds predicting them).
Each stage's growth exponent is the slope of log(wall) on log(N), and a linear fit wall = fixed + per_1k * N/1000
gives its fixed cost and its cost per 1,000 images (the extrapolations below are those fits, not measurements).

Prints a table and one JSON line; writes data/bench/scale/scale.json. The project folders are deleted after each N
unless --keep.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.benchmarks.scale_data import write_photo_competition
from pipeline.core import artifacts, paths
from pipeline.core.errors import UserError

COMP, EXP = "photos", "bench"
REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = {
    "model": {"name": "test_efficientnet", "pretrained": False},
    "train": {"epochs": 1, "batch_size": 64, "image_size": 64, "num_workers": 0, "warmup_epochs": 0},
    "tta": {"views": ["identity", "hflip"]},
    "device": "cpu",
}
NOOP_SET = "train.num_workers=0"  # an override that changes no fingerprint: the second run must do nothing


def measured(command: list[str], root: Path, what: str) -> tuple[dict[str, float], str]:
    """Run `command` in project `root`; its wall and CPU seconds and peak RSS (MB), and its stdout."""
    env = {**os.environ, "PIPELINE_ROOT": str(root), "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    for name in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"):  # a make inside `make bench-scale`
        env.pop(name, None)
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise UserError(f"bench-scale: {what} failed (exit {proc.returncode}): {tail}")
    stats = {"wall_s": round(wall, 3), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
             "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}  # fmt: skip
    return stats, output


def pipeline_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def make_cmd(*args: str) -> list[str]:
    return ["make", "--no-print-directory", "-f", str(REPO / "Makefile"), f"VENV={Path(sys.executable).parents[1]}",
            *args]  # fmt: skip


def prepare(root: Path, layout: str, n: int) -> float:
    """The competition's files, written by a child process: this one stays small, because a child's peak RSS
    (os.wait4) starts from its parent's at fork, and every stage is this process's child."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    command = [sys.executable, "-m", "pipeline.benchmarks.scale", "--write", layout, str(n)]
    return measured(command, root, "writing the competition")[0]["wall_s"]


def write_experiment(root: Path) -> str:
    """Two folds (competition.yaml, after init) and a tiny CPU model: the bench measures the data path, not a GPU."""
    comp_yaml = root / "configs" / COMP / "competition.yaml"
    values = yaml.safe_load(comp_yaml.read_text())
    values["folds"] = {**values.get("folds", {}), "n_folds": 2}
    comp_yaml.write_text(yaml.safe_dump(values, sort_keys=False))
    config = root / "configs" / COMP / f"{EXP}.yaml"
    config.write_text(yaml.safe_dump(EXPERIMENT, sort_keys=False))
    return str(config.relative_to(root))


def data_path(config: str) -> dict[str, float]:
    """One epoch of fold 0's cached training loader (augmentation included) against the model's train-step rate on
    synthetic tensors: img/s of each, and the share of a step spent waiting for data if both ran in turn."""
    import torch

    from pipeline.core.config import load_config
    from pipeline.data.augment import train_transform
    from pipeline.data.cache import cache_for
    from pipeline.data.loader import ImageDataset, make_loader
    from pipeline.training.fold import read_folds
    from pipeline.training.model import build_model, data_config

    cfg = load_config(config)
    model = build_model(cfg.model, cfg.num_classes)
    dcfg = data_config(model, cfg.train.image_size)
    out = paths.for_config(cfg)
    folds = read_folds(out)
    rows = folds[folds["fold"] != 0]
    dataset = ImageDataset(out.raw, rows["image"], np.zeros(len(rows), dtype=np.int64),
                           train_transform(cfg.augment, dcfg), seed=0, cache=cache_for(cfg, dcfg))  # fmt: skip
    loader = make_loader(dataset, cfg.train.batch_size, cfg.train.num_workers, torch.device("cpu"))
    started = time.perf_counter()
    for _ in loader:
        pass
    loader_rate = len(dataset) / (time.perf_counter() - started)
    optimizer = torch.optim.AdamW(model.parameters())
    batch = torch.randn(cfg.train.batch_size, 3, *dcfg["input_size"][1:])
    target = torch.zeros(cfg.train.batch_size, dtype=torch.int64)
    model.train()
    steps, started = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - started < 3:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(batch), target).backward()
        optimizer.step()
        steps += 1
    model_rate = steps * cfg.train.batch_size / (time.perf_counter() - started)
    wait = (1 / loader_rate) / (1 / loader_rate + 1 / model_rate)
    return {"loader_img_s": round(loader_rate, 1), "model_img_s": round(model_rate, 1),
            "data_wait_share": round(wait, 3)}  # fmt: skip


def run_one(root: Path, decode_check: bool = True) -> dict[str, Any]:
    """Every stage on one written competition: {stage: {wall_s, cpu_s, peak_rss_mb, ...}}."""
    stages: dict[str, dict[str, Any]] = {}

    def stage(name: str, command: list[str]) -> str:
        stages[name], output = measured(command, root, name)
        return output

    stage("init", pipeline_cmd("init", "--comp", COMP))
    config = write_experiment(root)
    for name, args in (("folds", ("folds",)), ("folds (current)", ("folds",)), ("cache", ("cache",))):
        output = stage(name, pipeline_cmd(*args, "--config", config))
    stages["cache"]["log"] = next((line for line in output.splitlines() if "one core" in line), "")
    output = stage("data path", [sys.executable, "-m", "pipeline.benchmarks.scale", "--data-path", config])
    stages["data path"].update(json.loads(output.strip().splitlines()[-1]))
    for name in ("train", "predict", "ensemble", "submission"):
        stage(name, pipeline_cmd(name, "--config", config))
    noop = stage("make all (no-op)", make_cmd("all", f"CONFIG={config}"))
    measured(make_cmd("all", f"CONFIG={config}", f"SET={NOOP_SET}"), root, "make all SET= (first)")
    with_set = stage("make all SET= (no-op)", make_cmd("all", f"CONFIG={config}", f"SET={NOOP_SET}"))
    for name, output in (("make all (no-op)", noop), ("make all SET= (no-op)", with_set)):
        ran = [s for s in ("train", "predict", "ensemble", "submission") if f"pipeline {s} " in output]
        stages[name].update({"stages_run": ran, "nothing_retrained": "nothing retrained" in output})
    output = stage("plan", pipeline_cmd("plan", "--config", config))
    stages["plan"]["plan"] = [line.strip() for line in output.splitlines() if "kernel" in line or "decoding" in line]
    output = stage("kernel test prediction", [sys.executable, "-m", "pipeline.benchmarks.scale", "--kernel-predict",
                                              config])  # fmt: skip
    stages["kernel test prediction"]["log"] = next((line for line in output.splitlines() if "decoded once" in line), "")
    if decode_check:
        output = measured([sys.executable, "-m", "pipeline.benchmarks.scale", "--decode"], root, "decode timing")[1]
        stages["decode"] = json.loads(output.strip().splitlines()[-1])
    return stages


def kernel_predict(config: str) -> None:
    """What an inference Kaggle Kernel does on the hidden test set (pipeline.inference.fold_model.predict_test_set):
    no cache from training (it is removed first), the test images decoded once into the Kernel's test cache, every
    fold predicting them with TTA."""
    import torch

    from pipeline.core.config import load_config
    from pipeline.inference.fold_model import predict_test_set

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    cfg = load_config(config)
    shutil.rmtree(paths.for_config(cfg).processed / "cache", ignore_errors=True)
    predict_test_set(cfg, torch.device("cpu"))


def decode_speedup(raw: Path, side: int = 74, repeats: int = 3) -> dict[str, float]:
    """Seconds to decode one 4,000 x 3,000 JPEG for the cache: in full then resized, and at reduced size."""
    from pipeline.benchmarks.scale_data import image_of
    from pipeline.data.decode import decode_for_cache, resize_square
    from pipeline.data.tables import load_image

    image = image_of(raw)
    full = min(_seconds(lambda: resize_square(load_image(image), side)) for _ in range(repeats))
    reduced = min(_seconds(lambda: decode_for_cache(image, side)) for _ in range(repeats))
    return {"full_decode_s": round(full, 4), "reduced_decode_s": round(reduced, 4), "speedup": round(full / reduced, 1)}


def _seconds(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def fit(ns: list[int], values: list[float]) -> dict[str, float | None]:
    """Growth exponent (slope of log value on log N) and the linear fit value = fixed + per_1k * N / 1000."""
    if len(ns) < 2 or min(values) <= 0:
        return {"exponent": None, "fixed": None, "per_1k": None}
    x, y = np.log(ns), np.log(values)
    exponent = float(np.polyfit(x, y, 1)[0])
    per_image, fixed = np.polyfit(np.asarray(ns, dtype=float), np.asarray(values, dtype=float), 1)
    return {
        "exponent": round(exponent, 2),
        "fixed": round(float(fixed), 2),
        "per_1k": round(float(per_image) * 1000, 3),
    }


def summarise(runs: dict[str, dict[int, dict[str, Any]]], extrapolate_to: int) -> dict[str, Any]:
    """Per layout and stage: the measurements by N, the fits, and the fits' value at `extrapolate_to` images."""
    summary: dict[str, Any] = {}
    for layout, by_n in runs.items():
        ns = sorted(by_n)
        for name in by_n[ns[0]]:
            if "wall_s" not in by_n[ns[0]][name]:  # decode timings, the data's writing time
                continue
            walls = [by_n[n][name]["wall_s"] for n in ns]
            rss = [by_n[n][name]["peak_rss_mb"] for n in ns]
            wall_fit, rss_fit = fit(ns, walls), fit(ns, rss)
            guess = {f"wall_s_at_{extrapolate_to}": None if wall_fit["fixed"] is None else
                     round(wall_fit["fixed"] + wall_fit["per_1k"] * extrapolate_to / 1000, 1),
                     f"peak_rss_mb_at_{extrapolate_to}": None if rss_fit["fixed"] is None else
                     round(rss_fit["fixed"] + rss_fit["per_1k"] * extrapolate_to / 1000)}  # fmt: skip
            summary[f"{layout}/{name}"] = {"wall": wall_fit, "rss": rss_fit, "extrapolated": guess}
    return summary


def table(runs: dict[str, dict[int, dict[str, Any]]], summary: dict[str, Any], extrapolate_to: int) -> str:
    lines = []
    for layout, by_n in runs.items():
        ns = sorted(by_n)
        head = "".join(f"{f'N={n}':>22}" for n in ns)
        lines.append(f"{layout + ': stage':<26}{head}  {'exp':>5} {'per 1k':>7}  {f'fit@{extrapolate_to}':>11}")
        lines.append(f"{'':<26}" + f"{'wall s / cpu s / MB':>22}" * len(ns))
        for name in by_n[ns[0]]:
            if f"{layout}/{name}" not in summary:
                continue
            cells = "".join(f"{by_n[n][name]['wall_s']:>8.1f}{by_n[n][name]['cpu_s']:>7.1f}"
                            f"{by_n[n][name]['peak_rss_mb']:>7.0f}" for n in ns)  # fmt: skip
            wall = summary[f"{layout}/{name}"]["wall"]
            guess = summary[f"{layout}/{name}"]["extrapolated"][f"wall_s_at_{extrapolate_to}"]
            exponent = "" if wall["exponent"] is None else f"{wall['exponent']:.2f}"
            per_1k = "" if wall["per_1k"] is None else f"{wall['per_1k']:.2f}"
            lines.append(f"{name:<26}{cells}  {exponent:>5} {per_1k:>7}  {'' if guess is None else guess:>11}")
        for n in ns:
            extra = by_n[n]
            lines.append(f"N={n}: {extra['cache'].get('log', '')}")
            dp = extra["data path"]
            lines.append(f"N={n}: data path: loader {dp['loader_img_s']:.0f} img/s, model step {dp['model_img_s']:.0f}"
                         f" img/s, data wait if in turn {dp['data_wait_share']:.0%}")  # fmt: skip
            for line in extra.get("plan", {}).get("plan", []):
                lines.append(f"N={n}: plan: {line}")
            if extra.get("kernel test prediction", {}).get("log"):
                lines.append(f"N={n}: {extra['kernel test prediction']['log']}")
            if "decode" in extra:
                d = extra["decode"]
                lines.append(f"N={n}: 4000x3000 JPEG for the cache: full decode + resize {d['full_decode_s']:.3f} s, "
                             f"reduced decode {d['reduced_decode_s']:.3f} s ({d['speedup']}x)")  # fmt: skip
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--n", nargs="+", type=int, default=[10_000, 30_000, 100_000], help="total images per run")
    parser.add_argument("--layouts", nargs="+", default=["csv", "folder_per_class"],
                        choices=["csv", "folder_per_class"])  # fmt: skip
    parser.add_argument("--extrapolate-to", type=int, default=100_000, help="N the linear fits are evaluated at")
    parser.add_argument("--resume", action="store_true", help="keep the runs scale.json already holds; do the rest")
    parser.add_argument("--keep", action="store_true", help="keep each project folder (data/bench/scale/<layout>-<N>)")
    parser.add_argument("--data-path", default=None, help=argparse.SUPPRESS)  # internal: one measured stage
    parser.add_argument("--write", nargs=2, default=None, help=argparse.SUPPRESS)  # internal: layout, N
    parser.add_argument("--decode", action="store_true", help=argparse.SUPPRESS)  # internal: decode timing
    parser.add_argument("--kernel-predict", default=None, help=argparse.SUPPRESS)  # internal: the Kernel's predict
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.data_path:
        print(json.dumps(data_path(args.data_path)))
        return 0
    if args.write:  # in the project folder (cwd, PIPELINE_ROOT)
        layout, n = args.write[0], int(args.write[1])
        write_photo_competition(paths.raw_dir(COMP), n - n // 5, n // 5, layout)
        return 0
    if args.decode:
        print(json.dumps(decode_speedup(paths.raw_dir(COMP))))
        return 0
    if args.kernel_predict:
        kernel_predict(args.kernel_predict)
        return 0
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    if args.resume and paths.bench_scale_json().is_file():  # the (layout, N) runs a killed benchmark finished
        done = artifacts.read_json(paths.bench_scale_json())["runs"]
        runs = {layout: {int(n): run for n, run in by_n.items()} for layout, by_n in done.items()}
    for layout in args.layouts:
        for n in sorted(args.n):
            if n in runs.get(layout, {}):
                continue
            root = paths.bench_scale_dir() / f"{layout}-{n}"
            written = prepare(root, layout, n)
            runs.setdefault(layout, {})[n] = {**run_one(root), "write": {"seconds": round(written, 1)}}
            print(f"bench-scale: {layout} N={n} done", file=sys.stderr)
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
            result = {"cores": os.cpu_count(), "runs": runs, "fits": summarise(runs, args.extrapolate_to)}
            artifacts.write_json(paths.bench_scale_json(), result)  # after each run: a kill keeps what finished
    summary = summarise(runs, args.extrapolate_to)
    result = {"cores": os.cpu_count(), "runs": runs, "fits": summary}
    print(table(runs, summary, args.extrapolate_to))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    from pipeline.core.cli import run_task

    sys.exit(run_task(main))
