"""A sweep's results: trials.csv (one row per trial: state, score, parameters, time, run folder) and trials.png.

Reads the Optuna study (pipeline.tuning.sweep); writes data/runs/<comp>/sweeps/<name>/trials.csv and trials.png.
"""

from __future__ import annotations

from typing import Any

from pipeline.core import artifacts, paths
from pipeline.core.config import Config
from pipeline.tuning.sweep_spec import SweepSpec


def trials_table(study: Any) -> Any:
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        steps = sorted(t.intermediate_values)
        value = t.value if t.state.name == "COMPLETE" else None  # Optuna gives pruned trials their last score
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": value,
                     "last_epoch": steps[-1] if steps else None,
                     "last_epoch_score": t.intermediate_values[steps[-1]] if steps else None,
                     **{k: v for k, v in t.params.items()},
                     "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
                     "run": t.user_attrs.get("run", "")})  # fmt: skip
    table = pd.DataFrame(rows)
    return table.astype({"last_epoch": "Int64"}) if "last_epoch" in table else table


def plot_trials(table: Any, metric: str, higher: bool) -> Any:
    """Each trial's score (pruned ones at their last epoch's score), and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    complete = table[table["state"] == "complete"]
    pruned = table[table["state"] == "pruned"]
    axis.scatter(complete["trial"], complete["value"], label="complete")
    axis.scatter(pruned["trial"], pruned["last_epoch_score"], marker="x", label="pruned (last epoch)")
    if len(complete):
        best = complete["value"].cummax() if higher else complete["value"].cummin()
        axis.step(complete["trial"], best, where="post", color="black", label="best so far")
    axis.set_xlabel("trial")
    axis.set_ylabel(f"validation {metric}")
    axis.legend()
    figure.tight_layout()
    return figure


def write_results(study: Any, cfg: Config, spec: SweepSpec) -> Any:
    from pipeline.core.metrics import higher_is_better

    out = paths.for_config(cfg)
    table = trials_table(study)
    artifacts.save_figure(out.sweep_plot(spec.name), plot_trials(table, cfg.metric, higher_is_better(cfg.metric)))
    artifacts.write_csv(out.sweep_table(spec.name), table)
    return table
