"""Finding samples, detecting the encoding, and check-data's problems (with the file and the fix)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from data_helpers import binary_masks, make_dataset, save_png, save_tif
from PIL import Image

from unetkit.cli import main
from unetkit.data.check import check_dataset
from unetkit.data.detect import detect_classes
from unetkit.data.samples import find_samples, scan_dataset

RNG = np.random.default_rng(3)


def test_layout_pairs_by_stem_and_mask_suffixes(tmp_path):
    root = tmp_path / "ds"
    for name in ("a", "b", "c"):
        save_png(root / "images" / f"{name}.png", np.zeros((4, 4), np.uint8))
    save_png(root / "masks" / "a.png", np.zeros((4, 4), np.uint8))
    save_png(root / "masks" / "b_mask.png", np.zeros((4, 4), np.uint8))
    save_tif(root / "masks" / "c_label.tif", np.zeros((4, 4), np.uint8))
    save_tif(root / "instances" / "a.tif", np.zeros((4, 4), np.uint16))
    samples, problems = scan_dataset(root)
    assert problems == []
    pairs = [(s.name, s.mask.name) for s in samples]
    assert pairs == [("a", "a.png"), ("b", "b_mask.png"), ("c", "c_label.tif")]
    assert samples[0].instances.name == "a.tif" and samples[1].instances is None


def test_csv_dataset_and_unlabelled_folder(tmp_path):
    save_png(tmp_path / "x" / "one.png", np.zeros((4, 4), np.uint8))
    save_png(tmp_path / "y" / "one_gt.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "list.csv").write_text("image,mask\nx/one.png,y/one_gt.png\n")
    samples = find_samples(tmp_path / "list.csv")
    assert len(samples) == 1 and samples[0].mask.name == "one_gt.png"
    unlabelled = find_samples(tmp_path / "x")
    assert len(unlabelled) == 1 and unlabelled[0].mask is None


@pytest.mark.parametrize(
    ("values", "encoding", "num_classes"),
    (([0, 1], "binary01", 2), ([0, 255], "binary255", 2), ([0, 1, 2, 5], "ids", 6)),
)
def test_detect_grey_encodings(tmp_path, values, encoding, num_classes):
    masks = [np.array(values * 8, np.uint8).reshape(4, -1) for _ in range(2)]
    root = make_dataset(tmp_path / "ds", masks)
    classes = detect_classes(find_samples(root))
    assert classes.encoding == encoding and classes.num_classes == num_classes
    assert check_dataset(root).ok


def test_detect_palette_rgb_grey_rgb_and_instances(tmp_path):
    idx = np.array([[0, 1, 2, 2]] * 4, np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10] + [0] * 759)
    (tmp_path / "p" / "masks").mkdir(parents=True)
    save_png(tmp_path / "p" / "images" / "a.png", np.zeros((4, 4), np.uint8))
    im.save(tmp_path / "p" / "masks" / "a.png")
    classes = detect_classes(find_samples(tmp_path / "p"))
    assert classes.encoding == "palette" and classes.colors[1] == (200, 10, 10)

    grey_rgb = np.repeat(np.array([[0, 255]] * 2, np.uint8)[..., None], 3, axis=-1)
    assert detect_classes(find_samples(make_dataset(tmp_path / "g", [grey_rgb]))).encoding == "binary255"

    many = RNG.permutation(np.arange(100, dtype=np.uint16)).reshape(10, 10)
    classes = detect_classes(find_samples(make_dataset(tmp_path / "i", [many], suffix=".tif")))
    assert classes.encoding == "instances" and classes.num_classes == 2


def test_rgb_masks_with_and_without_classes_file(tmp_path):
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[:3] = (0, 0, 255)
    rgb[3:] = (128, 64, 128)
    root = make_dataset(tmp_path / "ds", [rgb])
    report = check_dataset(root)
    assert report.ok and report.classes.encoding == "rgb" and report.classes.num_classes == 2
    assert any("without a classes file" in w for w in report.warnings)
    (root / "classes.json").write_text(json.dumps({"road": [128, 64, 128], "sky": [0, 0, 255]}))
    report = check_dataset(root)
    assert report.classes.names == ["road", "sky"] and not report.warnings
    assert report.class_pixels == {0: 18, 1: 18}
    rgb[0, 4] = (9, 9, 1)
    save_png(root / "masks" / "im_0.png", rgb)
    report = check_dataset(root)
    assert not report.ok
    assert "im_0.png" in report.problems[0] and "1 pixel(s)" in report.problems[0]
    assert "(9, 9, 1)" in report.problems[0] and "(0, 4)" in report.problems[0]


def test_stray_grey_levels_reported(tmp_path):
    masks = binary_masks()
    masks[1][10, 7] = 128
    masks[1][11, 7] = 128
    report = check_dataset(make_dataset(tmp_path / "ds", masks))
    assert report.classes.encoding == "binary255"
    [problem] = report.problems
    assert "im_1.png" in problem and "2 pixel(s)" in problem and "128" in problem
    assert "(10, 7)" in problem and "threshold them at 128" in problem


def test_missing_extra_and_mismatched_masks(tmp_path):
    root = make_dataset(tmp_path / "ds", binary_masks())
    (root / "masks" / "im_0.png").unlink()
    save_png(root / "masks" / "stray.png", np.zeros((24, 24), np.uint8))
    save_png(root / "masks" / "im_2.png", np.zeros((20, 24), np.uint8))
    (root / "masks" / "readme.txt").write_text("notes")
    report = check_dataset(root)
    text = "\n".join(report.problems)
    assert "im_0.png: missing mask" in text
    assert "stray.png: extra mask file" in text
    assert "im_2.png: mask size 20x24 differs from the image size 24x24" in text
    assert "readme.txt: not a supported image file" in text
    assert len(report.problems) == 4


def test_truncated_unreadable_nan_and_empty_files(tmp_path):
    root = make_dataset(tmp_path / "ds", binary_masks(4))
    data = (root / "images" / "im_0.png").read_bytes()
    (root / "images" / "im_0.png").write_bytes(data[: len(data) // 2])
    (root / "masks" / "im_1.png").write_bytes(b"garbage")
    (root / "images" / "im_2.png").unlink()
    bad = RNG.random((24, 24)).astype(np.float32)
    bad[3, 4] = np.nan
    bad[5, 5] = np.inf
    save_tif(root / "images" / "im_2.tif", bad)
    (root / "images" / "im_3.png").write_bytes(b"")
    report = check_dataset(root)
    text = "\n".join(report.problems)
    assert "im_0.png" in text and "truncated" in text
    assert "im_1.png: cannot be read" in text
    assert "im_2.tif: 2 NaN/inf value(s)" in text and "(0, 3, 4)" in text
    assert "im_3.png: the file is empty (0 bytes)" in text


def test_mixed_channels_and_blank_image(tmp_path):
    images = [np.zeros((24, 24), np.uint8), RNG.integers(0, 255, (24, 24, 3), dtype=np.uint8)]
    report = check_dataset(make_dataset(tmp_path / "ds", binary_masks(2), images))
    assert any("different numbers of channels" in p for p in report.problems)
    assert any("blank image" in w for w in report.warnings)


def test_ids_with_ignore_option_and_classes_file(tmp_path):
    masks = [np.array([[0, 1, 2, 11]] * 4, np.uint8) for _ in range(2)]
    root = make_dataset(tmp_path / "ds", masks)
    report = check_dataset(root)
    assert report.ok and report.classes.num_classes == 12
    report = check_dataset(root, ignore_index=11)
    assert report.ok and report.classes.num_classes == 3 and report.ignored_pixels == 8
    (root / "classes.txt").write_text("a\nb\nc\nvoid ignore\n")
    report = check_dataset(root)
    assert not report.ok  # 'void' is id 3 by position; value 11 is unknown
    (root / "classes.csv").write_text("id,name,ignore\n0,a,\n1,b,\n2,c,\n11,void,yes\n")
    (root / "classes.txt").unlink()
    report = check_dataset(root)
    assert report.ok and report.classes.names == ["a", "b", "c"] and report.classes.ignore_index == 11


def test_three_d_stacks_and_instances(tmp_path):
    root = tmp_path / "vol"
    vol = RNG.integers(0, 255, (5, 16, 16), dtype=np.uint8)
    inst = np.zeros((5, 16, 16), np.uint16)
    inst[1:3, 2:6, 2:6] = 1
    inst[1:4, 8:12, 8:12] = 2
    save_tif(root / "images" / "v.tif", vol)
    save_tif(root / "masks" / "v.tif", ((inst > 0) * 255).astype(np.uint8))
    save_tif(root / "instances" / "v.tif", inst)
    report = check_dataset(root)
    assert report.ok, report.problems
    assert report.dims == {3: 1} and report.objects == 2 and report.classes.encoding == "binary255"
    tifffile.imwrite(root / "instances" / "v.tif", inst[:4], photometric="minisblack")
    assert "differs from the image size" in check_dataset(root).problems[0]


def test_check_data_command_exit_codes(tmp_path, binary_dataset, capsys):
    assert main(["check-data", str(binary_dataset), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "mask encoding: binary255, 2 classes" in out and "no problems found" in out
    assert json.loads((tmp_path / "r.json").read_text())["problems"] == []
    (binary_dataset / "masks" / "im_0.png").unlink()
    assert main(["check-data", str(binary_dataset)]) == 1
    assert "missing mask" in capsys.readouterr().out
    assert main(["check-data", str(tmp_path / "nothing")]) == 1
