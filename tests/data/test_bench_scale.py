"""bench-scale: the growth fits, and the whole benchmark on a few hundred photos (every stage measured, the no-op
`make all` with and without SET= running no stage)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.benchmarks import scale


def test_the_growth_fit_finds_the_exponent_fixed_cost_and_cost_per_image() -> None:
    linear = scale.fit([1000, 2000, 4000], [3.0, 5.0, 9.0])  # 1 s fixed + 2 s per 1,000 images
    assert linear["fixed"] == pytest.approx(1.0) and linear["per_1k"] == pytest.approx(2.0)
    assert 0.5 < linear["exponent"] < 1.0  # the fixed second bends the log-log slope below 1
    quadratic = scale.fit([1000, 2000, 4000], [1.0, 4.0, 16.0])
    assert quadratic["exponent"] == pytest.approx(2.0)
    assert scale.fit([1000], [1.0])["exponent"] is None


@pytest.mark.slow
def test_bench_scale_measures_every_stage_on_a_few_hundred_photos(project: Path, capsys) -> None:  # noqa: ANN001
    assert scale.main(["--n", "150", "--layouts", "folder_per_class"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed.strip().splitlines()[-1])
    stages = result["runs"]["folder_per_class"]["150"]
    expected = {"init", "folds", "folds (current)", "cache", "data path", "train", "predict", "ensemble", "submission",
                "make all (no-op)", "make all SET= (no-op)", "plan", "kernel test prediction"}  # fmt: skip
    assert expected <= set(stages)
    assert all(stages[name]["wall_s"] > 0 and stages[name]["peak_rss_mb"] > 0 for name in expected)
    for noop in ("make all (no-op)", "make all SET= (no-op)"):
        assert stages[noop]["stages_run"] == [] and stages[noop]["nothing_retrained"], stages[noop]
    assert "one core's decode rate" in stages["cache"]["log"]
    assert any("decoding" in line and "the cache build's (150 images)" in line for line in stages["plan"]["plan"])
    assert stages["kernel test prediction"]["log"].endswith("30 test images decoded once for 2 models")
    assert stages["decode"]["speedup"] > 1.5  # the reduced JPEG decode beats a full decode of a 4,000 x 3,000 frame
    assert stages["data path"]["loader_img_s"] > 0 and 0 <= stages["data path"]["data_wait_share"] <= 1
    assert "folder_per_class: stage" in printed and (project / "data/bench/scale/scale.json").is_file()
    assert not (project / "data/bench/scale/folder_per_class-150").exists()  # deleted unless --keep
