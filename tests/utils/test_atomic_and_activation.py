from __future__ import annotations

import os
import stat

import pytest
import torch

from unetkit.activation import logits_to_labels, logits_to_probabilities, num_output_classes
from unetkit.utils.atomic import atomic_path, atomic_write_json, atomic_write_text


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "result.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]
    atomic_write_json(target, {"a": 1})
    assert target.read_text().strip().startswith("{")


def test_temp_file_keeps_the_suffix_for_format_detection(tmp_path):
    with atomic_path(tmp_path / "sub" / "mask.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path / "sub"
        tmp.write_bytes(b"x")
    assert (tmp_path / "sub" / "mask.png").read_bytes() == b"x"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "shared.txt", "for a colleague")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == mode


def test_activation_sigmoid_for_one_channel_softmax_otherwise():
    logits = torch.tensor([[[[0.0, 2.0]]]])
    probs = logits_to_probabilities(logits)
    torch.testing.assert_close(probs, torch.sigmoid(logits))
    assert logits_to_labels(logits).tolist() == [[[0, 1]]]
    multi = torch.tensor([[[[1.0]], [[3.0]], [[2.0]]]])
    torch.testing.assert_close(logits_to_probabilities(multi).sum(1), torch.ones(1, 1, 1))
    assert logits_to_labels(multi).tolist() == [[[1]]]
    assert num_output_classes(1) == 2 and num_output_classes(5) == 5
