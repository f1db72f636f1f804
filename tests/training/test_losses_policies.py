"""Losses chosen by train.loss (with soft targets from mixup/cutmix and label smoothing), augmentation policies
(uint8 H x W x C at the cached size, reproducible under the loader's per-sample seeds) and their config errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from pipeline.core.config import AugmentConfig, Config, DataConfig, ModelConfig, TrainConfig, validate, validate_augment
from pipeline.core.errors import ConfigError
from pipeline.core.schema import AUGMENT_POLICIES
from pipeline.data.augment import train_transform
from pipeline.data.augment_policies import POLICIES
from pipeline.training import losses

LOSS_CASES = [(loss, task) for loss in ("auto", "focal", "asymmetric") for task in ("single_label", "multi_label")]
LOSS_CASES += [("cross_entropy", "single_label"), ("bce", "multi_label"), ("logit_adjusted", "single_label")]


def _cfg(task: str = "single_label", **train: object) -> Config:
    data = DataConfig(task=task, classes=["a", "b", "c", "d"])
    return Config(data=data, train=TrainConfig(**{"batch_size": 4, **train}))


def _targets(task: str, n: int = 4) -> torch.Tensor:
    if task == "multi_label":
        return torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 1], [0, 0, 0, 1]], dtype=torch.float32)[:n]
    return torch.tensor([0, 1, 2, 3])[:n]


@pytest.mark.parametrize(("loss", "task"), LOSS_CASES)
@pytest.mark.parametrize("mixing", ["none", "mixup", "cutmix", "smoothing"])
def test_every_loss_trains_with_hard_and_soft_targets(loss: str, task: str, mixing: str) -> None:
    train = {"loss": loss, "mixup": 0.4 if mixing == "mixup" else 0.0, "cutmix": 1.0 if mixing == "cutmix" else 0.0,
             "label_smoothing": 0.1 if mixing in ("smoothing", "mixup") else 0.0}  # fmt: skip
    cfg = _cfg(task, **train)
    validate(cfg)
    mixer = losses.BatchMixer(cfg.train, 4, task, "classifier") if mixing in ("mixup", "cutmix") else None
    targets = _targets(task)
    criterion = losses.build_criterion(cfg, targets.numpy().astype(int), mixing=mixer is not None)
    images = torch.rand(4, 3, 8, 8) * 255
    if mixer is not None:
        images, targets = mixer(images, targets)
        assert targets.ndim == 2 and targets.dtype.is_floating_point  # soft targets reach the loss
    logits = torch.randn(4, 4, requires_grad=True)
    value = criterion(logits, targets)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value) and value > 0
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_focal_matches_torch_and_torchvision() -> None:
    logits, y = torch.randn(4, 4), _targets("single_label")
    focal0 = losses.build_criterion(_cfg(loss="focal", focal_gamma=0.0), y.numpy(), mixing=False)
    assert focal0(logits, y) == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)  # gamma 0 is CE
    focal2 = losses.build_criterion(_cfg(loss="focal"), y.numpy(), mixing=False)
    p = logits.softmax(-1)[torch.arange(4), y]
    assert focal2(logits, y) == pytest.approx((-((1 - p) ** 2) * p.log()).mean().item(), rel=1e-5)
    ym = _targets("multi_label")
    multi = losses.build_criterion(_cfg("multi_label", loss="focal", focal_alpha=0.3, focal_gamma=1.5), ym.numpy(),
                                   mixing=False)  # fmt: skip
    expected = sigmoid_focal_loss(logits, ym, alpha=0.3, gamma=1.5, reduction="mean")
    assert multi(logits, ym) == pytest.approx(expected.item(), rel=1e-5)


def test_logit_adjusted_is_cross_entropy_on_logits_plus_log_priors() -> None:
    """Menon et al.: CE(logits + log prior); a model whose logits are the log priors gets no push toward the majority
    beyond them, so at the optimum the raw logits are balanced."""
    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2, 3])  # priors .6 .2 .1 .1
    priors = torch.tensor([0.6, 0.2, 0.1, 0.1])
    criterion = losses.build_criterion(_cfg(loss="logit_adjusted"), y.numpy(), mixing=False)
    logits = torch.randn(10, 4)
    assert criterion(logits, y) == pytest.approx(F.cross_entropy(logits + priors.log(), y).item(), rel=1e-5)
    # soft targets (mixup) take the same adjustment
    assert criterion(logits, F.one_hot(y, 4).float()) == pytest.approx(criterion(logits, y).item(), rel=1e-5)
    # fitting a bias alone to these labels: plain CE learns the priors, the adjusted loss learns ~equal logits
    bias = torch.zeros(4, requires_grad=True)
    optimizer = torch.optim.SGD([bias], lr=1.0)
    for _ in range(300):
        optimizer.zero_grad()
        criterion(bias.expand(10, 4), y).backward()
        optimizer.step()
    assert (bias.detach() - bias.detach().mean()).abs().max() < 0.05


def test_single_label_asymmetric_with_mixed_targets_is_the_mixup_sum() -> None:
    cfg = _cfg(loss="asymmetric")
    criterion = losses.build_criterion(cfg, _targets("single_label").numpy(), mixing=True)
    logits, a, b = torch.randn(4, 4), torch.tensor([0, 1, 2, 3]), torch.tensor([3, 2, 1, 0])
    soft = 0.7 * F.one_hot(a, 4).float() + 0.3 * F.one_hot(b, 4).float()
    expected = 0.7 * criterion(logits, a) + 0.3 * criterion(logits, b)
    assert criterion(logits, soft) == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("task", "head", "train", "message"),
    [
        ("single_label", "classifier", {"loss": "hinge"}, "train.loss: 'hinge' is not one of"),
        ("multi_label", "classifier", {"loss": "cross_entropy"}, "cross_entropy is for single-label"),
        ("single_label", "classifier", {"loss": "bce"}, "bce is for multi-label"),
        ("ordinal", "regression", {"loss": "focal"}, "regression head trains with MSE"),
        ("single_label", "classifier", {"loss": "focal", "focal_gamma": -1.0}, "train.focal_gamma"),
        ("multi_label", "classifier", {"loss": "focal", "focal_alpha": 2.0}, "train.focal_alpha"),
        ("single_label", "classifier", {"loss": "asymmetric", "class_weights": "balanced"}, "no class weights"),
        ("multi_label", "classifier", {"loss": "logit_adjusted"}, "logit_adjusted is for single-label"),
        ("single_label", "classifier", {"loss": "logit_adjusted", "class_weights": "balanced"}, "already balances"),
    ],
)
def test_wrong_loss_settings_fail_by_key(task: str, head: str, train: dict, message: str) -> None:
    cfg = _cfg(task, **train)
    cfg = dataclasses.replace(cfg, model=ModelConfig(head=head))
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


DATA_CFG = {"input_size": (3, 24, 32), "interpolation": "bilinear"}


def _policy(policy: str, **kwargs: object) -> AugmentConfig:
    custom = [{"CLAHE": {"p": 1.0}}, "ToGray", {"Affine": {"rotate": [-20, 20], "p": 1.0}}, {"Resize": [40, 40]}]
    custom[-1] = {"Resize": {"height": 40, "width": 40}}  # changes the size: the policy restores the cached size
    return AugmentConfig(policy=policy, custom=custom if policy == "custom" else [], **kwargs)


@pytest.mark.parametrize("policy", AUGMENT_POLICIES)
def test_policies_keep_uint8_size_and_are_reproducible(policy: str) -> None:
    cfg = _policy(policy, erasing=0.5, coarse_dropout=0.5)
    validate_augment(cfg)
    image = np.random.default_rng(0).integers(0, 256, (50, 60, 3), dtype=np.uint8)

    def run(seed: int) -> list[np.ndarray]:
        transform = train_transform(cfg, DATA_CFG)
        outs = []
        for key in range(4):  # as pipeline.data.loader.ImageDataset seeds each sample
            transform.set_random_seed(seed * 1_000_003 + key)
            outs.append(transform(image=image)["image"])
        return outs

    first, again, other = run(1), run(1), run(2)
    for out in first:
        assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_default_policy_is_todays_pipeline() -> None:
    names = [type(t).__name__ for t in train_transform(AugmentConfig(), DATA_CFG).transforms]
    assert names == ["RandomResizedCrop", "HorizontalFlip", "ColorJitter"]
    names = [type(t).__name__ for t in train_transform(AugmentConfig(policy="heavy"), DATA_CFG).transforms]
    assert {"OneOf", "CoarseDropout", "Affine"} <= set(names)
    distortions = [type(t).__name__ for t in train_transform(AugmentConfig(policy="heavy"), DATA_CFG).transforms[-3]]
    assert distortions == ["GridDistortion", "ElasticTransform", "OpticalDistortion"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"policy": "strong"}, "augment.policy: 'strong' is not one of"),
        ({"policy": "custom", "custom": ["NoSuchTransform"]}, r"augment.custom\[0\]: 'NoSuchTransform' is not"),
        ({"policy": "custom", "custom": ["CLAHE", {"Affine": {"rotat": 3}}]}, r"augment.custom\[1\]: Affine has no"),
        ({"policy": "custom", "custom": [{"Affine": {"p": 7}}]}, r"augment.custom\[0\]: Affine.*invalid"),
        ({"policy": "custom", "custom": [{"A": 1, "B": 2}]}, r"augment.custom\[0\]: expected a transform name"),
        ({"policy": "custom"}, "augment.custom: policy custom needs"),
        ({"custom": ["CLAHE"]}, "augment.custom: set augment.policy: custom"),
        ({"policy": "randaugment", "magnitude": 11.0}, "augment.magnitude"),
        ({"policy": "randaugment", "num_ops": 0}, "augment.num_ops"),
        ({"erasing": 1.5}, "augment.erasing"),
    ],
)
def test_wrong_augment_settings_fail_by_key(values: dict, message: str) -> None:
    """Names and knobs fail when the config loads; a custom transform fails when the policy is built (where
    albumentations is imported), with the same key in the message."""
    cfg = AugmentConfig(**values)
    with pytest.raises(ConfigError, match=message):
        validate(Config(data=DataConfig(classes=["a", "b"]), augment=cfg))
        train_transform(cfg, DATA_CFG)


def test_the_policy_table_covers_every_policy_name_in_the_schema() -> None:
    assert tuple(POLICIES) == AUGMENT_POLICIES


def test_drop_rates_reach_timm_and_the_resolved_config() -> None:
    from pipeline.core.config import to_dict
    from pipeline.training.model import build_model

    cfg = ModelConfig(name="test_efficientnet", pretrained=False, drop_rate=0.3, drop_path_rate=0.2)
    model = build_model(cfg, 3)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2, abs=0.05) and model.drop_rate == 0.3
    assert to_dict(Config(model=cfg))["model"]["drop_path_rate"] == 0.2
    with pytest.raises(ConfigError, match="model.drop_path_rate: must be in"):
        validate(Config(data=DataConfig(classes=["a", "b"]), model=ModelConfig(drop_path_rate=1.0)))


@pytest.mark.parametrize(("train", "mixing"), [({"loss": "logit_adjusted"}, False),
                                               ({"loss": "focal", "class_weights": "balanced"}, False),
                                               ({"class_weights": "balanced"}, True)])  # fmt: skip
def test_a_criterion_copies_nothing_to_the_device_per_step(train: dict, mixing: bool, monkeypatch) -> None:  # noqa: ANN001
    """Class weights and log priors go to the device once, in build_criterion: on a GPU a host-to-device copy at every
    step would stall it. The step itself calls no Tensor.to."""
    cfg = _cfg(**train)
    y = np.array([0, 0, 0, 1, 2, 2]) % cfg.num_classes
    criterion = losses.build_criterion(cfg, y, mixing=mixing, device=torch.device("cpu"))
    logits = torch.randn(6, cfg.num_classes)
    targets = torch.eye(cfg.num_classes)[torch.from_numpy(y)] if mixing else torch.from_numpy(y)
    expected = criterion(logits, targets)

    def no_copy(*args: object, **kwargs: object) -> None:
        raise AssertionError("Tensor.to called inside a training step's loss")

    monkeypatch.setattr(torch.Tensor, "to", no_copy)
    assert torch.equal(criterion(logits, targets), expected)
