"""The schema's choice lists (checked when a config loads, without torch or albumentations) name exactly what the
builders' tables build, so a name accepted at load time always builds and a builder's entry is always reachable."""

from __future__ import annotations

from pipeline.core import schema


def test_tta_views_match_the_view_table() -> None:
    from pipeline.inference.tta import VIEWS

    assert tuple(VIEWS) == schema.TTA_VIEWS


def test_augment_policies_match_the_policy_table() -> None:
    from pipeline.data.augment_policies import POLICIES, _ops

    assert tuple(POLICIES) == schema.AUGMENT_POLICIES
    assert len(_ops(0.5)) == len(schema.RANDAUGMENT_OPS)


def test_blend_methods_match_the_blend_stage() -> None:
    from pipeline.inference import blend

    assert set(blend.FITTERS) <= set(schema.BLEND_METHODS)
    assert blend.METHODS == schema.BLEND_METHODS


def test_loading_a_config_imports_no_torch_or_albumentations(tmp_path) -> None:  # noqa: ANN001
    import subprocess
    import sys

    code = (
        "import sys; from pipeline.core.config import Config, DataConfig, validate; "
        "validate(Config(data=DataConfig(classes=['a', 'b']))); "
        "heavy = sorted({'torch', 'albumentations', 'timm', 'cv2'} & set(sys.modules)); print(heavy); "
        "sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
