"""Grad-CAM class-activation maps for a trained fold model (numbers only; pipeline.reporting.plots draws them).

The maps come from a forward hook on the model's last feature stage (timm's `feature_info[-1]["module"]`):
its activation A (N, K, h, w) and the gradient of the chosen class's logit with respect to it give
cam = relu(sum_k mean_hw(dLogit/dA_k) * A_k), upsampled to the input size and scaled to [0, 1] per image.
CNNs (channel-first 4-D feature maps) are supported; a model whose last stage gives tokens or channel-last
maps (ViTs, Swin, ...) or that has no feature_info raises Unsupported with the reason, which the report shows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.core.config import Config


class Unsupported(Exception):
    """Grad-CAM cannot run on this model; the message says why (shown in the report)."""


def target_layer(model: torch.nn.Module) -> tuple[str, torch.nn.Module, int]:
    """(name, module, channels) of the last feature stage timm reports for `model`."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise Unsupported(f"{type(model).__name__} has no timm feature_info: no last stage to hook")
    last = info[-1]
    name, channels = last["module"], int(last["num_chs"])
    try:
        return name, model.get_submodule(name), channels
    except AttributeError as exc:
        raise Unsupported(f"{type(model).__name__}: feature stage {name!r} is not a submodule") from exc


def grad_cam(model: torch.nn.Module, images: torch.Tensor, classes: list[int]) -> np.ndarray:
    """Maps (n, H, W) in [0, 1] for `classes[i]` of `images[i]` (n, 3, H, W; pixels as the model takes them)."""
    name, layer, channels = target_layer(model)
    store: dict[str, torch.Tensor] = {}

    def keep(_module: torch.nn.Module, _args: tuple, output: torch.Tensor) -> None:
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(lambda grad: store.__setitem__("grad", grad))
        store["activation"] = output

    handle = layer.register_forward_hook(keep)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = images.float().requires_grad_(True)  # gradients flow even when the weights are frozen
            logits = model(x)
            activation = store.get("activation")
            if not (isinstance(activation, torch.Tensor) and activation.ndim == 4 and activation.shape[1] == channels):
                shape = tuple(activation.shape) if isinstance(activation, torch.Tensor) else type(activation).__name__
                raise Unsupported(f"{type(model).__name__}: stage {name!r} gives {shape}, not a (N, C, H, W) map")
            if logits.ndim != 2 or logits.shape[1] < 2:
                raise Unsupported("a regression head has one output: no class to explain")
            index = torch.as_tensor(classes, device=logits.device)
            logits.gather(1, index[:, None]).sum().backward()  # each row's logit depends on its own image only
    finally:
        handle.remove()
        model.train(was_training)
    weights = store["grad"].mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * store["activation"]).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)
    return (cam / peak[:, None, None]).cpu().numpy()


def class_index(name: str, classes: list[str]) -> int:
    """The column of a class name (multi-label rows name several: the first one is explained)."""
    first = name.split()[0] if name and name != "(none)" else classes[0]
    return classes.index(first) if first in classes else 0


def pick_rows(
    table: pd.DataFrame,
    targets: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    task: str,
    worst: int = 8,
    correct: int = 4,
) -> pd.DataFrame:
    """The `worst` highest-loss OOF rows and the `correct` lowest-loss ones (interpret.COLUMNS + `kind`)."""
    from pipeline.reporting import interpret

    bad = interpret.top_losses(table, targets, probs, classes, task, n=worst).assign(kind="worst")
    best = np.argsort(interpret.row_losses(targets, probs, task), kind="stable")[:correct]
    good = interpret.top_losses(table.iloc[best], targets[best], probs[best], classes, task, n=correct)
    return pd.concat([bad, good.iloc[::-1].assign(kind="correct")], ignore_index=True)


def explain_rows(
    cfg: Config, rows: pd.DataFrame, device: torch.device
) -> tuple[list[np.ndarray | None], np.ndarray, np.ndarray]:
    """Per row of `rows` (pick_rows): the model-sized image and the maps for its true and predicted class,
    each from the fold model that did not train on it. Raises Unsupported, or UserError for missing weights."""
    from pipeline.core import paths
    from pipeline.core.bag import bag_seeds, member_config
    from pipeline.core.errors import UserError
    from pipeline.data.augment import eval_transform, to_chw
    from pipeline.data.tables import load_image
    from pipeline.inference.fold_model import load_fold_model

    classes, raw = cfg.data.classes, paths.raw_dir(cfg.comp)
    n = len(rows)
    images: list[np.ndarray | None] = [None] * n
    true_maps, pred_maps = np.zeros((n, 1, 1)), np.zeros((n, 1, 1))
    seed = (bag_seeds(cfg) or [None])[0]  # a seed bag: its first member's model explains the fold
    for fold in sorted(set(int(f) for f in rows["fold"])):
        model, dcfg = load_fold_model(member_config(cfg, seed), fold, device, seed)
        transform = eval_transform(dcfg)
        picked = [i for i in range(n) if int(rows["fold"].iloc[i]) == fold]
        batch = []
        for i in picked:
            try:
                images[i] = transform(image=load_image(raw / rows["image"].iloc[i]))["image"]
            except UserError:
                continue
            batch.append(i)
        if not batch:
            continue
        x = torch.from_numpy(np.stack([to_chw(images[i]) for i in batch])).to(device)
        cams = [grad_cam(model, x, [class_index(rows[column].iloc[i], classes) for i in batch])
                for column in ("true", "predicted")]  # fmt: skip
        if true_maps.shape[1:] != cams[0].shape[1:]:
            true_maps = np.zeros((n, *cams[0].shape[1:]))
            pred_maps = np.zeros_like(true_maps)
        true_maps[batch], pred_maps[batch] = cams[0], cams[1]
    return images, true_maps, pred_maps
