"""TrainConfig: JSON/YAML round trip, dotted overrides with type conversion, clear errors, presets."""

import pytest

from unetkit.config import (
    TrainConfig,
    apply_overrides,
    dump_config,
    load_config,
    monitor_mode,
    parse_override_args,
    preset_config,
    save_config,
)


def test_json_and_yaml_round_trip(tmp_path):
    config = apply_overrides(
        TrainConfig(),
        {
            "model.base_channels": "8",
            "model.dropout": "[0.1, 0.1, 0.2, 0.2, 0.3]",
            "loss.class_weights": "1,3",
            "data.normalize.mode": "zscore",
            "budget.max_minutes": "2.5",
            "augment.scale_range": "[0.9, 1.1]",
        },
    )
    for name in ("config.json", "config.yaml"):
        path = save_config(config, tmp_path / name)
        loaded = load_config(path)
        assert loaded == config
    assert loaded.model.dropout == (0.1, 0.1, 0.2, 0.2, 0.3)
    assert loaded.loss.class_weights == [1.0, 3.0]
    assert loaded.data.normalize.mode == "zscore"
    assert loaded.augment.scale_range == (0.9, 1.1)


def test_overrides_convert_types_and_accept_dashes():
    config = apply_overrides(
        TrainConfig(),
        parse_override_args(
            [
                "--model.base-channels",
                "32",
                "--optim.lr=1e-4",
                "--budget.patience",
                "none",
                "--data.weight-map",
                "yes",
                "--schedule.warmup_steps",
                "0",
                "--seed",
                "-3",
            ]
        ),
    )
    assert config.model.base_channels == 32 and isinstance(config.model.base_channels, int)
    assert config.optim.lr == pytest.approx(1e-4)
    assert config.budget.patience is None
    assert config.data.weight_map is True
    assert config.seed == -3


def test_unknown_field_lists_close_matches():
    with pytest.raises(ValueError, match=r"did you mean model\.base_channels"):
        apply_overrides(TrainConfig(), {"model.base_chanels": "3"})
    with pytest.raises(ValueError, match=r"optim\.lr"):
        apply_overrides(TrainConfig(), {"lr": "0.1"})


def test_bad_values_name_the_field():
    with pytest.raises(ValueError, match="model.depth expects an integer"):
        apply_overrides(TrainConfig(), {"model.depth": "deep"})
    with pytest.raises(ValueError, match="data.weight_map expects true or false"):
        apply_overrides(TrainConfig(), {"data.weight_map": "maybe"})
    with pytest.raises(ValueError, match="optim.name must be one of"):
        apply_overrides(TrainConfig(), {"optim.name": "lbfgs"}).validate()
    with pytest.raises(ValueError, match="needs a value"):
        parse_override_args(["--model.depth"])


def test_partial_file_is_laid_over_defaults(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  depth: 3\noptim:\n  name: sgd\n")
    config = load_config(path)
    assert config.model.depth == 3 and config.optim.name == "sgd"
    assert config.data.patch_size == TrainConfig().data.patch_size
    bad = tmp_path / "bad.json"
    bad.write_text('{"modle": {"depth": 3}}')
    with pytest.raises(ValueError, match=r"bad.json.*unknown config field 'modle'"):
        load_config(bad)


def test_presets_and_dump():
    paper = preset_config("paper")
    assert paper.model.padding == "valid" and paper.model.base_channels == 64
    assert paper.optim.name == "sgd" and paper.optim.momentum == 0.99
    assert paper.loss.name == "weighted_ce" and paper.data.weight_map
    paper.validate()
    tutorial = preset_config("tutorial").validate()
    assert tutorial.model.num_classes == 1 and tutorial.model.dropout[-1] == 0.3
    assert "base_channels: 16" in dump_config(tutorial, "yaml")
    with pytest.raises(ValueError, match="preset must be one of"):
        preset_config("huge")


def test_monitor_modes():
    assert monitor_mode("rand_error") == "min" and monitor_mode("pixel_error") == "min"
    assert monitor_mode("dice") == "max" and monitor_mode("mean_iou") == "max"
