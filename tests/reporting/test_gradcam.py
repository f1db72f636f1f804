"""Grad-CAM: maps point at the evidence for a class, unsupported models say why, and the report draws them."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from helpers.builders import TINY_MODEL, run_main, tiny_experiment
from helpers.chain import run_chain, write_competition_yaml
from pipeline.core.config import load_config
from pipeline.reporting import gradcam, report


class PatchModel(torch.nn.Module):
    """Class 1's logit is the mean of channel 0 after a ReLU stage; class 0's is minus that."""

    def __init__(self) -> None:
        super().__init__()
        self.stage = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.ReLU())
        with torch.no_grad():
            self.stage[0].weight.zero_()
            self.stage[0].bias.zero_()
            self.stage[0].weight[0, 0] = 1.0
        self.feature_info = [{"module": "stage", "num_chs": 2}]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.stage(x).mean(dim=(2, 3))[:, :1]
        return torch.cat([-m, m], dim=1)


def test_the_map_lights_up_where_the_class_evidence_is() -> None:
    images = torch.zeros(2, 3, 16, 16)
    images[0, 0, :6, :6] = 1.0  # a patch top-left
    images[1, 0, 10:, 10:] = 1.0  # a patch bottom-right
    cams = gradcam.grad_cam(PatchModel(), images, [1, 1])
    assert cams.shape == (2, 16, 16) and cams.min() >= 0 and cams.max() == pytest.approx(1.0)
    assert cams[0, :4, :4].mean() > 0.9 and cams[0, 12:, 12:].mean() < 0.1
    assert cams[1, 12:, 12:].mean() > 0.9 and cams[1, :4, :4].mean() < 0.1
    against = gradcam.grad_cam(PatchModel(), images, [0, 0])  # the patch is evidence against class 0
    assert np.allclose(against, 0)


def test_timm_cnns_work_and_vits_say_why_not() -> None:
    images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    for name in (TINY_MODEL, "test_resnet"):
        cams = gradcam.grad_cam(timm.create_model(name, num_classes=3), images, [0, 2])
        assert cams.shape == (2, 32, 32) and np.isfinite(cams).all()
    with pytest.raises(gradcam.Unsupported, match=r"not a \(N, C, H, W\) map"):
        gradcam.grad_cam(timm.create_model("test_vit", num_classes=3, img_size=32), images, [0, 1])
    with pytest.raises(gradcam.Unsupported, match="no timm feature_info"):
        gradcam.grad_cam(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3)), images, [0, 1])


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
@pytest.mark.parametrize(("model", "supported"), [(TINY_MODEL, True), ("test_vit", False)])
def test_report_draws_gradcam_for_worst_and_correct_rows(
    project: Path, capsys: pytest.CaptureFixture, model: str, supported: bool
) -> None:
    write_competition_yaml(project, "csv")
    config = tiny_experiment(project, model={"name": model, "pretrained": False})
    run_chain(capsys, config)
    result = run_main(capsys, "report", "--config", str(config))
    assert result.returncode == 0, result.stderr
    run = project / "data/runs/toy/tiny"
    page = (run / "report.html").read_text()
    if not supported:
        assert "Grad-CAM is not supported for test_vit" in page and not (run / "report_gradcam.png").exists()
        return
    with Image.open(run / "report_gradcam.png") as image:
        assert image.format == "PNG" and min(image.size) > 100
    assert 'src="report_gradcam.png"' in page
    built = report.build_report(load_config(config), argparse.Namespace())
    rows = built.gradcam
    assert list(rows["kind"]) == ["worst"] * 8 + ["correct"] * 4
    assert rows["loss"].iloc[:8].min() >= rows["loss"].iloc[8:].max()
    assert (rows["loss"].iloc[:8].to_numpy() == built.top_losses["loss"].iloc[:8].to_numpy()).all()
