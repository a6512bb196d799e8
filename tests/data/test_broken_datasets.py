"""`unetkit check-data` and `unetkit train` on datasets of broken files (tests/broken_corpus.py): each broken
file is named once with its reason, all at once, and training refuses before it starts."""

from __future__ import annotations

from broken_corpus import BROKEN, BROKEN_MASKS, assert_each_named_once, labelled_corpus, write_corpus

from unetkit.cli import main

#: A 3D stack among 2D images is named as such; its 2D mask's size is reported on the mask's line.
SEGMENTATION_REASONS = {**BROKEN, "stack.tif": "3d", **BROKEN_MASKS}


def test_check_data_names_each_broken_image_and_mask_once(tmp_path, capsys):
    data = labelled_corpus(tmp_path / "data set")
    assert main(["check-data", str(data)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert_each_named_once(captured.out, SEGMENTATION_REASONS)


def test_train_refuses_before_starting_naming_every_broken_file(tmp_path, capsys):
    data = labelled_corpus(tmp_path / "data set")
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--no-progress"]) == 2
    assert_each_named_once(capsys.readouterr().err, SEGMENTATION_REASONS)
    assert not (run / "model.safetensors").exists()


def test_restoration_and_generation_training_name_every_broken_file(tmp_path, capsys):
    data = tmp_path / "images"
    write_corpus(data)
    reasons = {**BROKEN, "stack.tif": "3d"}
    for task in ("denoise", "generate"):
        run = tmp_path / task
        assert main(["train", str(data), "--task", task, "--out", str(run), "--no-progress"]) == 2
        assert_each_named_once(capsys.readouterr().err, reasons)
        assert not (run / "model.safetensors").exists()
