"""plan: will this experiment fit in a Kaggle Kernel's time limit? An estimate from measured throughput.

Reads the experiment's fold<k>/log.csv (train_images_per_s of every epoch), fold<k>/oof_by_view.json when
`make report TTA=1` measured the prediction speed, folds.csv and test.csv. Prints, per scenario, the
estimated hours of training, per-epoch validation, OOF and test prediction (folds x TTA views x images)
against the limit, and warns when a scenario leaves less than 10 % of the limit spare (kernel start-up,
package installs and weight loading take the rest). Writes nothing; report includes the same plan.

A seed bag (train.seeds) counts folds x seeds models: each member's log.csv, and every model predicts.
A blend (--blend NAME, Make: BLEND=<name>): the inference kernel of `make kaggle-bundle BLEND=` predicts every
member with its own folds, views, image size and measured throughput; the plan is their sum, and when it does not
fit it lists what to drop (whole experiments, single views), ordered by the blend's OOF gain per second saved:
an experiment's gain is the blend's OOF score with it minus without it (the other weights renormalised), a view's
from the member's per-view OOF (oof_by_view.csv; unknown, and said so, where it was not measured).

Scenarios: `inference kernel` (fold weights attached as a dataset, test prediction only: what a code
competition runs) and `full kernel` (the whole chain inside the kernel).

Decoding (JPEG to the cache's pixels) runs on the kernel's KERNEL_CORES CPU cores, each image once (the Kernel caches
the test images for all its models): one core's rate is the cache build's record (cache/<side>px/decode.json), else
timed on a sample of the test images.

Estimates, stated in the output: prediction with no measurement runs at PREDICT_SPEEDUP x the training
throughput per view (a forward pass without backward; conservative). Measured on a SAMPLE=N run, the
plan is made for the full competition's row counts when its folds.csv exists. `--slowdown X` scales
everything for a kernel GPU X times slower than the machine that wrote the logs (e.g. a T4 against an A100).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from dataclasses import dataclass, field

import pandas as pd

from pipeline.core import paths
from pipeline.core.bag import members
from pipeline.core.config import Config
from pipeline.core.errors import UserError
from pipeline.core.run_config import config_of_run
from pipeline.data.tables import read_csv
from pipeline.inference.tta import AUTO_CANDIDATES
from pipeline.inference.tta_auto import effective_views

log = logging.getLogger(__name__)

DEFAULT_LIMIT = "9h"  # Kaggle's run-time limit for GPU notebooks and most code competitions
MARGIN = 0.10  # share of the limit kept free for start-up, installs and loading weights
PREDICT_SPEEDUP = 2.0  # inference images/s per view relative to training images/s, when not measured
PARTS = ("decode", "train", "validate", "predict_oof", "predict_test")
KERNEL_CORES = 4  # CPU cores of a Kaggle notebook (CPU or GPU): they decode the images, the GPU does not
DECODE_SAMPLE = 16  # test images timed when no cache build has measured the decode rate


def parse_duration(text: str | float, flag: str = "--time-limit") -> float:
    """'9h', '90m', '1h30m', '45s' or a number of seconds -> seconds (> 0)."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*", text)
        if match and any(match.groups()):
            hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
            seconds = hours * 3600 + minutes * 60 + secs
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise UserError(f"{flag} {text!r}: expected a duration like 9h, 90m, 1h30m or 3600") from None
    if seconds <= 0:
        raise UserError(f"{flag} {text!r}: must be more than zero")
    return seconds


def format_hours(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    if not hours:
        return f"{minutes}m"
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


@dataclass
class Throughput:
    train_images_per_s: float
    predict_images_per_s: float  # per TTA view
    predict_measured: bool
    epochs_measured: int
    decode_images_per_s: float | None = None  # one core's rate decoding an image for the cache (None: unknown)
    decode_how: str = ""


@dataclass
class Plan:
    table: pd.DataFrame  # scenario, train, validate, predict_oof, predict_test, total (seconds), fits
    limit_s: float
    throughput: Throughput
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def measure_throughput(cfg: Config) -> Throughput:
    """Median training images/s over every logged epoch; prediction speed from oof_by_view.json, else estimated."""
    out = paths.for_config(cfg)
    rates = []
    for fold, seed in [(k, seed) for k in range(cfg.folds.n_folds) for seed in members(cfg)]:  # a bag: each member
        path = out.member(seed).train_log(fold)
        if path.exists():
            log_table = read_csv(path, "training log")
            if "train_images_per_s" in log_table.columns:
                rates += [float(v) for v in log_table["train_images_per_s"].dropna() if float(v) > 0]
    if not rates:
        raise UserError(
            f"{out.train_log(0)}: no measured train_images_per_s in any fold's log.csv; train at least one epoch "
            "first (a quick measure: make train CONFIG=... SAMPLE=500 SET=train.epochs=1)"
        )
    images = seconds = 0.0
    for fold in range(cfg.folds.n_folds):
        try:
            stamp = json.loads(out.oof_by_view_stamp(fold).read_text())
            images += float(stamp["images"]) * len(stamp["views"]) * len(members(cfg))  # a bag's stamp: every member
            seconds += float(stamp["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    train_rate = float(pd.Series(rates).median())
    decode, how = measure_decode(cfg)
    if images > 0 and seconds > 0:
        return Throughput(train_rate, images / seconds, True, len(rates), decode, how)
    return Throughput(train_rate, train_rate * PREDICT_SPEEDUP, False, len(rates), decode, how)


def measure_decode(cfg: Config) -> tuple[float | None, str]:
    """One core's images/s decoding for this experiment's cache: what the cache build recorded, else a timed sample
    of DECODE_SAMPLE test images (reduced JPEG decode + resize, as the Kernel's test cache does them)."""
    from pipeline.data.cache import cache_folder, cache_side, decode_record
    from pipeline.data.decode import decode_for_cache

    out = paths.for_config(cfg)
    size = cfg.train.image_size or _pretrained_size(cfg.model.name)
    if size is None:
        return None, ""
    size = max([size, *getattr(cfg.train, "progressive_sizes", [])])  # the side the cache is built at
    record = decode_record(cache_folder(out.processed, size))
    if record is not None:
        return float(record["per_core_images_per_s"]), f"the cache build's ({record.get('images', '?')} images)"
    if not out.test_csv.exists():
        return None, ""
    images = list(read_csv(out.test_csv, "test listing")["image"])
    sample = images[:: max(1, len(images) // DECODE_SAMPLE)][:DECODE_SAMPLE]
    started = time.process_time()
    try:
        for image in sample:
            decode_for_cache(out.raw / image, cache_side(size))
    except (UserError, OSError):  # images not here (a plan made away from the data): say it is unknown
        return None, ""
    seconds = time.process_time() - started
    return (len(sample) / seconds, f"timed on {len(sample)} test images") if sample and seconds > 0 else (None, "")


def decode_note(rate: Throughput) -> str:
    if not rate.decode_images_per_s:
        return "decoding time unknown (no cache built and no test images readable here): not counted"
    return (f"decoding {rate.decode_images_per_s:.0f} img/s per core ({rate.decode_how}) on the kernel's "
            f"{KERNEL_CORES} CPU cores, each image once")  # fmt: skip


def _pretrained_size(model: str) -> int | None:
    import timm

    pretrained = timm.models.get_pretrained_cfg(model)
    return int(pretrained.input_size[-1]) if pretrained is not None else None


def count_rows(cfg: Config, test_images: int | None) -> tuple[int, int, list[str]]:
    """(training rows, test images, notes): the full competition's counts when the run is a SAMPLE=N run."""
    notes = []
    run, full = paths.for_config(cfg), paths.Paths(cfg.comp)
    folds_csv = full.folds_csv if cfg.sample and full.folds_csv.exists() else run.folds_csv
    if not folds_csv.exists():
        raise UserError(f"{folds_csv} not found; run `make folds CONFIG=...` first")
    n_train = len(read_csv(folds_csv, "folds table"))
    if cfg.sample:
        which = "the full competition's" if folds_csv == full.folds_csv else f"the sample's (no {full.folds_csv} yet)"
        notes.append(f"throughput measured on the SAMPLE={cfg.sample} run; row counts are {which}")
    if test_images is not None:
        return n_train, test_images, notes
    test_csv = full.test_csv if cfg.sample and full.test_csv.exists() else run.test_csv
    if not test_csv.exists():
        raise UserError(f"{test_csv} not found; run `make folds CONFIG=...` first, or pass --test-images N")
    n_test = len(read_csv(test_csv, "test listing"))
    notes.append(f"{n_test} test images from {test_csv} (a code competition's hidden test set may be larger: "
                 "--test-images N, Make: TEST_IMAGES=N)")  # fmt: skip
    return n_train, n_test, notes


def estimate(cfg: Config, rate: Throughput, n_train: int, n_test: int, slowdown: float = 1.0,
             kernel_cores: int = KERNEL_CORES) -> pd.DataFrame:  # fmt: skip
    """Seconds per part for each scenario, summed over folds. Decoding is paid once per image on the kernel's CPU
    cores (the Kernel caches the test images for all its models; the full chain builds the cache once)."""
    k, epochs, views = cfg.folds.n_folds, cfg.train.epochs, len(effective_views(cfg, list(AUTO_CANDIDATES)))
    valid_rows, seeds = n_train / k, len(members(cfg))  # a seed bag: folds x seeds models, each trained and predicting
    bag = f" x {seeds} seeds" if seeds > 1 else ""
    per_fold = {
        "train": epochs * (n_train - valid_rows) / rate.train_images_per_s,
        "validate": epochs * valid_rows / rate.predict_images_per_s,
        "predict_oof": valid_rows * views / rate.predict_images_per_s,
        "predict_test": n_test * views / rate.predict_images_per_s,
    }
    scenarios = {
        f"inference kernel ({k} folds{bag} x {views} views x {n_test} test images)": {"predict_test"},
        f"full kernel (train {k} folds{bag} x {epochs} epochs, then predict)": set(PARTS),
    }
    per_image = 1 / (rate.decode_images_per_s * kernel_cores) if rate.decode_images_per_s else 0.0
    decode = {"inference": n_test * per_image, "full": (n_train + n_test) * per_image}
    rows = []
    for name, parts in scenarios.items():
        row = {"scenario": name, **{p: (k * seeds * per_fold[p] * slowdown if p in parts else 0.0) for p in PARTS
                                    if p != "decode"}}  # fmt: skip
        row["decode"] = decode[name.split()[0]]
        row["total"] = sum(row[p] for p in PARTS)
        rows.append(row)
    return pd.DataFrame(rows)


def suggest(cfg: Config, table: pd.DataFrame, limit_s: float) -> list[str]:
    """What would fit: fewer views or folds for inference; weights trained elsewhere for the full chain."""
    k, views = cfg.folds.n_folds, len(effective_views(cfg, list(AUTO_CANDIDATES)))
    budget = limit_s * (1 - MARGIN)
    warnings = []
    for _, row in table.iterrows():
        if row["total"] <= budget:
            continue
        line = (f"warning: {row['scenario']} needs ~{format_hours(row['total'])}, more than the "
                f"{format_hours(budget)} usable of a {format_hours(limit_s)} limit")  # fmt: skip
        if row["scenario"].startswith("inference"):
            per_view_fold = row["predict_test"] / (k * views)
            left = budget - row["decode"]  # decoding the test images is paid whatever the views and folds
            max_views, max_folds = int(left // (per_view_fold * k)), int(left // (per_view_fold * views))
            if max_views >= 1:
                line += f"; it fits with at most {max_views} TTA view(s) over {k} folds"
                line += f", or {max_folds} fold(s) with {views} views" if max_folds >= 1 else ""
            else:
                line += "; even one view over every fold is too slow: fewer folds, smaller images or a faster model"
        else:
            line += "; train elsewhere and attach the weights (inference kernel), or lower train.epochs or the folds"
        warnings.append(line)
    return warnings


def make_plan(cfg: Config, limit_s: float, test_images: int | None = None, slowdown: float = 1.0) -> Plan:
    if slowdown <= 0:
        raise UserError(f"--slowdown {slowdown}: must be more than zero (2 = the kernel is twice as slow)")
    rate = measure_throughput(cfg)
    n_train, n_test, notes = count_rows(cfg, test_images)
    table = estimate(cfg, rate, n_train, n_test, slowdown)
    table["fits"] = table["total"] <= limit_s * (1 - MARGIN)
    how = (
        "measured"
        if rate.predict_measured
        else f"estimated as {PREDICT_SPEEDUP:g}x training (make report TTA=1 measures it)"
    )
    notes.insert(0, f"training {rate.train_images_per_s:.1f} img/s (median of {rate.epochs_measured} logged epochs); "
                    f"prediction {rate.predict_images_per_s:.1f} img/s per view, {how}")  # fmt: skip
    notes.append(decode_note(rate))
    if slowdown != 1.0:
        notes.append(f"every time x{slowdown:g} (--slowdown; decoding on the CPU excepted)")
    return Plan(table, limit_s, rate, notes, suggest(cfg, table, limit_s))


def format_plan(plan: Plan) -> str:
    lines = [f"time plan against a {format_hours(plan.limit_s)} kernel limit ({100 * MARGIN:.0f}% kept spare):"]
    for _, row in plan.table.iterrows():
        parts = ", ".join(f"{p.replace('_', ' ')} {format_hours(row[p])}" for p in PARTS if row[p] > 0)
        verdict = "fits" if row["fits"] else "DOES NOT FIT"
        lines.append(f"  {row['scenario']}: {format_hours(row['total'])} ({parts}) -> {verdict}")
    lines += [f"  note: {note}" for note in plan.notes]
    return "\n".join(lines)


def plan_from_args(args: argparse.Namespace, cfg: Config) -> Plan:
    limit = parse_duration(getattr(args, "time_limit", None) or DEFAULT_LIMIT)
    return make_plan(cfg, limit, getattr(args, "test_images", None), getattr(args, "slowdown", None) or 1.0)


def run(args: argparse.Namespace) -> None:
    if getattr(args, "blend", None):  # make plan BLEND=<name>: the whole blend's inference kernel
        from pipeline.core.cli import comp_from_args

        limit = parse_duration(getattr(args, "time_limit", None) or DEFAULT_LIMIT)
        plan = make_blend_plan(comp_from_args(args), args.blend, limit, getattr(args, "test_images", None),
                               getattr(args, "slowdown", None) or 1.0)  # fmt: skip
        print(format_blend_plan(plan))
        if not plan.fits:
            log.warning("warning: blend %s needs ~%s, more than the %s usable; drop what the plan lists first",
                        plan.name, format_hours(plan.total), format_hours(plan.budget))  # fmt: skip
        return
    cfg = config_of_run(args)  # what the run trained (SET included), unless SET is given now
    plan = plan_from_args(args, cfg)
    print(format_plan(plan))
    for warning in plan.warnings:
        log.warning("%s", warning)


# A whole blend (make plan BLEND=<name>): the inference kernel predicts every member with its own folds, views and
# image size (its own measured throughput), so the blend's time is the sum; when that does not fit, what to drop.
@dataclass
class MemberCost:
    exp: str
    folds: int
    views: list[str]
    image_size: int
    weight: float
    seconds: float  # test prediction: folds x views x test images at the member's own throughput, + decoding
    measured: bool  # prediction speed measured (oof_by_view.json), not estimated from training
    decode_seconds: float = 0.0  # the part of `seconds` spent decoding the test images (once, whatever the views)


@dataclass
class Drop:
    exp: str
    view: str | None  # None: the whole experiment
    seconds: float  # saved by dropping it
    gain: float | None  # the blend's OOF score with it minus without (positive = it helps); None: unknown
    note: str = ""

    @property
    def what(self) -> str:
        return f"experiment {self.exp}" if self.view is None else f"view {self.view} of {self.exp}"

    @property
    def per_second(self) -> float | None:
        return None if self.gain is None else self.gain / max(self.seconds, 1e-9)


@dataclass
class BlendPlan:
    name: str
    metric: str
    members: list[MemberCost]
    limit_s: float
    drops: list[Drop]  # least OOF gain per second first, unknown gains last
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(m.seconds for m in self.members)

    @property
    def budget(self) -> float:
        return self.limit_s * (1 - MARGIN)

    @property
    def fits(self) -> bool:
        return self.total <= self.budget


def member_cost(cfg: Config, weight: float, test_images: int | None, slowdown: float) -> tuple[MemberCost, list[str]]:
    """One member's inference-kernel time: `estimate`'s inference scenario for its own config and throughput."""
    rate = measure_throughput(cfg)
    n_train, n_test, notes = count_rows(cfg, test_images)
    inference = estimate(cfg, rate, n_train, n_test, slowdown).iloc[0]
    views = effective_views(cfg, list(AUTO_CANDIDATES))
    cost = MemberCost(cfg.exp, cfg.folds.n_folds, views, cfg.train.image_size, weight, float(inference["total"]),
                      rate.predict_measured, float(inference["decode"]))  # fmt: skip
    return cost, [*notes, f"{cfg.exp}: {decode_note(rate)}"]


def _blend_score(stack, weights, keep, combine: str, cfg: Config, targets) -> float:  # noqa: ANN001 - arrays
    """The blend's OOF score over the members in `keep`, their weights renormalised (equal when they sum to 0)."""
    import numpy as np

    from pipeline.core.metrics import score
    from pipeline.inference import blend_apply

    w = np.asarray(weights, dtype=float)[keep]
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
    return score(cfg.metric, targets, blend_apply.apply(stack[keep], w, combine, cfg.data.task))


def experiment_drops(stack, weights, combine: str, cfg: Config, targets, costs: list[MemberCost]) -> list[Drop]:  # noqa: ANN001
    """Each member: the blend's OOF score with it minus without it (the others' weights renormalised)."""
    from pipeline.core.metrics import goodness

    everyone = list(range(len(costs)))
    base = goodness(cfg.metric, _blend_score(stack, weights, everyone, combine, cfg, targets))
    drops = []
    for i, cost in enumerate(costs):
        rest = [j for j in everyone if j != i]
        without = goodness(cfg.metric, _blend_score(stack, weights, rest, combine, cfg, targets))
        drops.append(Drop(cost.exp, None, cost.seconds, base - without,
                          f"weight {cost.weight:.3f}; the others' weights renormalised"))  # fmt: skip
    return drops


def view_drops(stack, weights, combine: str, configs: list[Config], targets, costs: list[MemberCost],
               folds: pd.DataFrame) -> list[Drop]:  # noqa: ANN001 # fmt: skip
    """Each view of a member with several: the blend's OOF gain from the member's per-view OOF, where it exists."""
    import numpy as np

    from pipeline.core.metrics import goodness
    from pipeline.inference.view_scores import read_view_oof

    drops, everyone = [], list(range(len(costs)))
    for i, (cfg, cost) in enumerate(zip(configs, costs, strict=True)):
        if len(cost.views) < 2:
            continue
        by_view = read_view_oof(cfg, folds)
        known = by_view is not None and set(cost.views) <= set(by_view)
        for view in cost.views:
            saved = (cost.seconds - cost.decode_seconds) / len(cost.views)  # a view's share; decoding stays
            if not known:
                measure = f"make report CONFIG=configs/{cfg.comp}/{cfg.exp}.yaml TTA=1 measures it"
                drops.append(Drop(cost.exp, view, saved, None, f"gain unknown: no per-view OOF ({measure})"))
                continue
            trial = stack.copy()
            trial[i] = np.mean([by_view[v] for v in cost.views], axis=0)
            base = goodness(cfg.metric, _blend_score(trial, weights, everyone, combine, cfg, targets))
            trial[i] = np.mean([by_view[v] for v in cost.views if v != view], axis=0)
            without = goodness(cfg.metric, _blend_score(trial, weights, everyone, combine, cfg, targets))
            drops.append(Drop(cost.exp, view, saved, base - without, "from its per-view OOF"))
    return drops


def order_drops(drops: list[Drop]) -> list[Drop]:
    """Least OOF gain per second first (the cheapest loss for the time saved); unknown gains after the known."""
    known = sorted((d for d in drops if d.gain is not None), key=lambda d: d.per_second)
    return known + [d for d in drops if d.gain is None]


def make_blend_plan(comp: str, name: str, limit_s: float, test_images: int | None = None,
                    slowdown: float = 1.0) -> BlendPlan:  # fmt: skip
    """The blend's inference-kernel time (the sum over its members) and the drops ordered by OOF gain per second."""
    from pipeline.core.run_config import config_of_member
    from pipeline.data.tables import encode_targets
    from pipeline.inference import blend_apply

    if slowdown <= 0:
        raise UserError(f"--slowdown {slowdown}: must be more than zero (2 = the kernel is twice as slow)")
    scores_path = paths.Paths(comp).blend_scores(name)
    if not scores_path.is_file():
        raise UserError(f"{scores_path} not found; run `make blend COMP={comp}` first")
    scores = json.loads(scores_path.read_text())
    blend_apply.check_current(comp, name, scores, paths.blend_config(comp))
    members = list(scores["members"])
    configs = [config_of_member(comp, exp, "plan") for exp in members]
    costs, notes = [], []
    for cfg in configs:
        cost, member_notes = member_cost(cfg, float(scores["weights"][cfg.exp]), test_images, slowdown)
        costs.append(cost)
        notes += [n for n in member_notes if n not in notes]
    cfg = configs[0]
    folds = read_csv(paths.for_config(cfg).folds_csv, "folds table")
    targets = encode_targets(folds["label"], cfg.data)
    stack = blend_apply.read_members_oof(comp, members, cfg.data.classes, list(folds["id"]))
    weights = [float(scores["weights"][exp]) for exp in members]
    drops = experiment_drops(stack, weights, scores["combine"], cfg, targets, costs)
    drops += view_drops(stack, weights, scores["combine"], configs, targets, costs, folds)
    if slowdown != 1.0:
        notes.append(f"every time x{slowdown:g} (--slowdown; decoding on the CPU excepted)")
    return BlendPlan(name, cfg.metric, costs, limit_s, order_drops(drops), notes)


def format_blend_plan(plan: BlendPlan) -> str:
    lines = [f"time plan of blend {plan.name} against a {format_hours(plan.limit_s)} kernel limit "
             f"({100 * MARGIN:.0f}% kept spare):"]  # fmt: skip
    for m in plan.members:
        how = "measured" if m.measured else "estimated"
        lines.append(f"  {m.exp}: {m.folds} folds x {len(m.views)} views ({'+'.join(m.views)}) at {m.image_size} px, "
                     f"weight {m.weight:.3f}: {format_hours(m.seconds)} ({how} speed)")  # fmt: skip
    verdict = "fits" if plan.fits else "DOES NOT FIT"
    lines.append(f"  blend inference kernel (sum of the members): {format_hours(plan.total)} -> {verdict}")
    if not plan.fits:
        lines.append(f"  to fit, drop in this order (least {plan.metric} OOF gain per second first):")
        remaining, fitted = {m.exp: m.seconds for m in plan.members}, False
        for k, drop in enumerate(plan.drops, 1):
            gain = "gain unknown" if drop.gain is None else f"OOF gain {drop.gain:+.5f} ({drop.per_second:+.2e}/s)"
            lines.append(f"    {k}. {drop.what}: saves {format_hours(drop.seconds)}, {gain}; {drop.note}")
            saved = remaining[drop.exp] if drop.view is None else min(drop.seconds, remaining[drop.exp])
            remaining[drop.exp] -= saved
            total = sum(remaining.values())
            if not fitted and total <= plan.budget:
                lines.append(f"    -> with drops 1..{k} the blend needs ~{format_hours(max(total, 0))}: it fits")
                fitted = True
        if not fitted:
            lines.append("    -> even dropping all of these does not fit: smaller images or a faster model")
    lines += [f"  note: {note}" for note in plan.notes]
    return "\n".join(lines)
