"""MaskConfig: the mask stage's settings in one value, nested as TrainConfig.masks.

The settings hashes below were computed by the mask stage before MaskConfig existed (the loose
keyword arguments of ``run_mask_stage``): a MaskConfig with equal values must name the same journal,
so existing caches of users' runs stay valid.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

import c2f
from c2f.data.layouts import load_dataset
from c2f.masks import MaskConfig, run_mask_stage
from c2f.masks.generators import make_generator
from c2f.training import TrainConfig

# Before MaskConfig: run_mask_stage(ds, out) -- every setting at its default then (also what `c2f train`'s
# mask stage used with TrainConfig's defaults), GrabCut at 320 px, 5 iterations, core 0.3.
BEFORE = {"grabcut_max_side": 320, "grabcut_iterations": 5, "grabcut_core_erosion": 0.3}
BEFORE_HASH = "32e3bd860253becf"
BEFORE_SETTINGS = {
    "crf": False, "format_version": 1, "generator": "saliency",
    "generator_settings": {"centre_sigma": 0.4, "contrast_weight": 0.15, "max_side": 200, "method": "otsu",
                           "min_component": 0.2},
    "grabcut": True, "grabcut_iterations": 5, "grabcut_max_side": 320, "ignore_band": 0, "max_fg": 0.8,
    "min_fg": 0.01,
}
# Today's defaults: GrabCut at 256 px, 3 iterations, core 0.5 (a setting since, so in the dict).
DEFAULT_HASH = "87d8d85a6d2d502c"
DEFAULT_SETTINGS = {**BEFORE_SETTINGS, "grabcut_iterations": 3, "grabcut_max_side": 256, "grabcut_core_erosion": 0.5}
OTHER_HASH = "a1315369b5e8041a"


@pytest.fixture(scope="module")
def two_images(demo_data):
    dataset = load_dataset(demo_data)
    return dataset.subset([s.key for s in dataset.samples[:2]])


def _check_journal(out_dir: Path, expected_hash: str) -> None:
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["settings_hash"] == expected_hash
    recomputed = hashlib.sha256(json.dumps(summary["settings"], sort_keys=True).encode()).hexdigest()[:16]
    assert recomputed == expected_hash  # the hash digests the settings dict the run wrote
    assert [p.name for p in out_dir.glob("manifest-*.jsonl")] == [f"manifest-{expected_hash}.jsonl"]


def test_the_settings_of_before_name_the_same_journal_as_before(two_images, tmp_path):
    result = run_mask_stage(two_images, tmp_path / "before", MaskConfig(**BEFORE), progress=False)
    _check_journal(result.out_dir, BEFORE_HASH)
    assert json.loads((tmp_path / "before" / "summary.json").read_text())["settings"] == BEFORE_SETTINGS


def test_the_default_mask_config_is_the_default_run(two_images, tmp_path):
    result = run_mask_stage(two_images, tmp_path / "default", MaskConfig(), progress=False)
    _check_journal(result.out_dir, DEFAULT_HASH)
    assert json.loads((tmp_path / "default" / "summary.json").read_text())["settings"] == DEFAULT_SETTINGS
    # No config at all is the default config; workers are no setting of the outputs.
    again = run_mask_stage(two_images, tmp_path / "default", progress=False)
    assert again.summary["counts"]["skipped_cached"] == 2 and again.summary["settings_hash"] == DEFAULT_HASH


def test_non_default_mask_config_names_the_same_journal_as_before(two_images, tmp_path):
    config = MaskConfig(generator="box", generator_options={"fraction": 0.5}, grabcut=False, grabcut_iterations=3,
                        grabcut_max_side=None, grabcut_core_erosion=0.3, crf=True, ignore_band=2, min_fg=0.0,
                        max_fg=1.0)
    result = run_mask_stage(two_images, tmp_path, config, progress=False)
    _check_journal(result.out_dir, OTHER_HASH)
    assert result.summary["settings"]["generator_settings"] == {"fraction": 0.5}
    assert result.summary["settings"]["grabcut_max_side"] is None and result.summary["settings"]["crf"] is True


def test_core_erosion_is_a_setting_of_the_journal(two_images, tmp_path):
    """Journals from before the setting existed (core 0.3) keep their name; another core names its own."""
    before = run_mask_stage(two_images, tmp_path / "a", MaskConfig(grabcut_core_erosion=0.3), progress=False)
    assert "grabcut_core_erosion" not in before.summary["settings"]
    other = run_mask_stage(two_images, tmp_path / "b", MaskConfig(grabcut_core_erosion=0.6), progress=False)
    assert other.summary["settings"]["grabcut_core_erosion"] == 0.6
    assert other.summary["settings_hash"] != before.summary["settings_hash"]
    assert other.summary["counts"]["labelled"] == 2


def test_a_generator_object_replaces_the_named_one(two_images, tmp_path):
    result = run_mask_stage(two_images, tmp_path / "a", MaskConfig(grabcut=False),
                            generator=make_generator("box", fraction=0.5), progress=False)
    assert result.summary["settings"]["generator"] == "box"
    with pytest.raises(ValueError, match="generator options"):
        run_mask_stage(two_images, tmp_path / "b", MaskConfig(generator_options={"fraction": 0.5}),
                       generator=make_generator("box"), progress=False)
    with pytest.raises(TypeError, match="MaskConfig"):
        run_mask_stage(two_images, tmp_path / "c", "box", progress=False)


def test_a_runs_config_yaml_is_nested_and_loads_back_equal(two_images, tmp_path, monkeypatch):
    """A real run writes config.yaml and runs its mask stage from cfg.masks (stopped right after it)."""
    import c2f.training.recursive as recursive

    class Stop(Exception):
        pass

    def stop(*_args, **_kwargs):
        raise Stop

    (tmp_path / "mine.yaml").write_text(
        "rounds: 2\nround_grabcut: false\nmasks:\n  generator: saliency\n  workers: 1\n  ignore_band: 0\n")
    cfg = TrainConfig.from_file(tmp_path / "mine.yaml").updated(device="cpu")
    assert cfg.masks == MaskConfig(workers=1) and cfg.round_grabcut is False
    monkeypatch.setattr(recursive, "_Run", stop)  # built right after the mask stage
    with pytest.raises(Stop):
        recursive.train_recursive(cfg, two_images, tmp_path / "run", progress=False)

    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["masks"]["workers"] == 1 and saved["masks"]["generator"] == "saliency"
    assert not {"mask_workers", "generator", "mask_grabcut", "min_fg"} & set(saved)  # no flat keys left
    assert TrainConfig.from_file(tmp_path / "run" / "config.yaml") == cfg
    # The run's mask stage ran with cfg.masks: the journal a run with these settings always had.
    _check_journal(tmp_path / "run" / "mask_stage", DEFAULT_HASH)


def test_every_mask_setting_round_trips_through_save(tmp_path):
    masks = MaskConfig(generator="box", generator_options={"fraction": 0.6, "nested": {"a": [1, 2]}}, grabcut=False,
                       grabcut_iterations=3, grabcut_max_side=None, crf=True, ignore_band=2, min_fg=0.0, max_fg=1.0,
                       workers=3)
    cfg = TrainConfig(rounds=2, masks=masks, round_grabcut=False, write_masks=False)
    cfg.save(tmp_path / "config.yaml")
    loaded = TrainConfig.from_file(tmp_path / "config.yaml")
    assert loaded == cfg and loaded.masks.grabcut_max_side is None
    assert cfg.to_dict()["masks"] == masks.to_dict()
    (tmp_path / "c.toml").write_text("rounds = 3\n[masks]\nworkers = 2\ncrf = true\n")
    assert TrainConfig.from_file(tmp_path / "c.toml").masks == MaskConfig(workers=2, crf=True)


def test_bundled_recipes_are_nested(tmp_path):
    from c2f.training.config import RECIPES_DIR

    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert "mask_workers" not in data and data["masks"]["workers"] == 2, path.name
        assert TrainConfig.from_recipe(path.stem).masks == MaskConfig(workers=2)


def test_legacy_flat_keys_map_to_masks(tmp_path):
    """An old run folder's config.yaml (flat mask keys) still loads, into the nested form."""
    old = {"rounds": 3, "generator": "box", "generator_options": {"fraction": 0.6}, "mask_grabcut": False,
           "grabcut_iterations": 3, "mask_crf": True, "ignore_band": 2, "mask_workers": 2, "round_grabcut": False,
           "write_masks": False, "min_fg": 0.05, "max_fg": 0.9}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    cfg = TrainConfig.from_file(tmp_path / "config.yaml")
    assert cfg.masks == MaskConfig(generator="box", generator_options={"fraction": 0.6}, grabcut=False,
                                   grabcut_iterations=3, crf=True, ignore_band=2, workers=2, min_fg=0.05, max_fg=0.9)
    assert (cfg.rounds, cfg.round_grabcut, cfg.write_masks) == (3, False, False)
    # updated() with a flat key changes that field only, over the current masks (here the cpu recipe's).
    cpu = TrainConfig.from_recipe("cpu")
    changed = cpu.updated(generator="ufs", mask_workers=None)
    assert changed.masks == cpu.masks.updated(generator="ufs") and changed.masks.workers == 2
    # Flat and nested keys for different settings combine.
    mixed = TrainConfig().updated(mask_crf=True, masks={"workers": 4})
    assert mixed.masks == MaskConfig(crf=True, workers=4)


def test_a_setting_given_both_flat_and_nested_is_refused(tmp_path):
    (tmp_path / "both.yaml").write_text("mask_workers: 2\nmasks:\n  workers: 3\n")
    with pytest.raises(ValueError, match="mask_workers and masks.workers"):
        TrainConfig.from_file(tmp_path / "both.yaml")
    with pytest.raises(ValueError, match="mask_grabcut and masks.grabcut"):
        TrainConfig().updated(mask_grabcut=False, masks={"grabcut": True})
    with pytest.raises(ValueError, match="generator and masks.generator"):
        TrainConfig().updated(generator="box", masks=MaskConfig())  # a whole MaskConfig sets every field


@pytest.mark.parametrize("fields, match", [
    ({"workers": 0}, "workers"),
    ({"ignore_band": -1}, "ignore_band"),
    ({"grabcut_iterations": -1}, "grabcut_iterations"),
    ({"grabcut_iterations": 2.5}, "grabcut_iterations"),
    ({"grabcut_max_side": 0}, "grabcut_max_side"),
    ({"grabcut_core_erosion": 1.0}, "grabcut_core_erosion"),
    ({"grabcut_core_erosion": -0.1}, "grabcut_core_erosion"),
    ({"grabcut_core_erosion": "0.5"}, "grabcut_core_erosion"),
    ({"min_fg": 0.5, "max_fg": 0.4}, "min_fg"),
    ({"max_fg": 1.5}, "max_fg"),
    ({"min_fg": -0.1}, "min_fg"),
    ({"grabcut": "yes"}, "grabcut"),
    ({"generator_options": "fraction=0.5"}, "generator_options"),
])
def test_invalid_values_raise_one_line_errors(fields, match, tmp_path):
    with pytest.raises(ValueError, match=match) as raised:
        MaskConfig(**fields)
    assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match=match):  # the same check from a config file
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"masks": fields}))
        TrainConfig.from_file(tmp_path / "bad.yaml")


def test_unknown_keys_name_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown mask config keys \\['bogus'\\]; valid: .*workers"):
        MaskConfig().updated(bogus=1)
    (tmp_path / "bad.yaml").write_text("masks:\n  mask_workers: 2\n")
    with pytest.raises(ValueError, match="mask_workers.*valid"):
        TrainConfig.from_file(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="masks must be"):
        TrainConfig().updated(masks="saliency")


def test_updated_skips_none_and_copies_options():
    base = MaskConfig(workers=2)
    assert base.updated(workers=None, crf=True) == MaskConfig(workers=2, crf=True)
    options = {"fraction": 0.5}
    config = MaskConfig(generator="box", generator_options=options)
    options["fraction"] = 0.9
    assert config.generator_options == {"fraction": 0.5}
    assert MaskConfig().merged({"grabcut_max_side": None}).grabcut_max_side is None


def test_exported_from_the_package():
    assert c2f.MaskConfig is MaskConfig
    assert "MaskConfig" in c2f.__all__
