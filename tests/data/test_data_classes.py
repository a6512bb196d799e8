"""Mask encodings: decode raw values to class ids, encode and save them back, classes files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from unetkit.data.classes import ClassInfo, read_classes_file
from unetkit.data.io import DataError, read_label_image

LABELS = np.array([[0, 1, 1], [2, 0, 1]])


def test_binary_encodings_decode_and_encode():
    b255 = ClassInfo.binary("binary255")
    raw = np.array([[0, 255], [255, 0]], np.uint8)
    np.testing.assert_array_equal(b255.decode(raw), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(b255.encode(b255.decode(raw)), raw)
    b01 = ClassInfo.binary("binary01")
    np.testing.assert_array_equal(b01.decode(raw // 255), [[0, 1], [1, 0]])
    assert b255.num_classes == 2 and len(b255.colors) == 2


def test_stray_grey_level_names_count_position_and_fix(tmp_path):
    raw = np.zeros((8, 8), np.uint8)
    raw[2:6, 2:6] = 255
    raw[2, 5] = raw[5, 2] = 128
    info = ClassInfo.binary("binary255")
    invalid = info.find_invalid(raw)
    assert invalid.values == [128] and invalid.count == 2 and invalid.example == (2, 5)
    with pytest.raises(DataError) as exc:
        info.decode(raw, source=tmp_path / "m.png")
    message = str(exc.value)
    assert "m.png" in message and "2 pixel(s)" in message and "(2, 5)" in message and "threshold" in message


def test_ids_with_ignore_index():
    info = ClassInfo([f"c{i}" for i in range(11)], ignore_index=11)
    raw = np.array([[0, 10, 11], [3, 11, 4]], np.uint8)
    labels = info.decode(raw)
    np.testing.assert_array_equal(labels, raw)
    assert info.num_classes == 11
    with pytest.raises(DataError, match="class ids must be 0..10 or 11"):
        info.decode(np.array([[12]], np.uint8))
    with pytest.raises(ValueError, match="must not be a class id"):
        ClassInfo(["a", "b"], ignore_index=1)


def test_rgb_decode_unknown_colour_and_ignore_colour():
    info = ClassInfo(["sky", "road"], [(0, 0, 255), (128, 64, 128)], encoding="rgb", ignore_color=(0, 0, 0))
    assert info.ignore_index == 255
    raw = np.zeros((3, 4, 3), np.uint8)
    raw[0] = (0, 0, 255)
    raw[1] = (128, 64, 128)
    np.testing.assert_array_equal(info.decode(raw), [[0] * 4, [1] * 4, [255] * 4])
    raw[2, 3] = (7, 7, 9)
    invalid = info.find_invalid(raw)
    assert invalid.what == "colour" and invalid.values == [(7, 7, 9)] and invalid.example == (2, 3)
    encoded = info.encode(np.array([[0, 1, 255]]))
    np.testing.assert_array_equal(encoded, [[(0, 0, 255), (128, 64, 128), (0, 0, 0)]])


def test_instances_encoding_is_foreground():
    info = ClassInfo.binary("instances")
    np.testing.assert_array_equal(info.decode(np.array([[0, 3, 700]], np.uint16)), [[0, 1, 1]])


@pytest.mark.parametrize("encoding", ("binary01", "binary255", "ids", "palette", "rgb", "instances"))
def test_save_mask_round_trip(tmp_path, encoding):
    n = 2 if encoding in ("binary01", "binary255", "instances") else 3
    labels = np.minimum(LABELS, n - 1)
    info = ClassInfo([f"c{i}" for i in range(n)], encoding=encoding)
    path = info.save_mask(tmp_path / "out.png", labels)
    assert path.suffix == ".png" and path.exists()
    raw = read_label_image(path)
    if encoding == "palette":
        with Image.open(path) as im:
            assert im.mode == "P" and tuple(im.getpalette()[3:6]) == info.colors[1]
    np.testing.assert_array_equal(info.decode(raw), labels)


def test_save_mask_3d_and_large_ids_become_tiff(tmp_path):
    info = ClassInfo([f"c{i}" for i in range(300)])
    path = info.save_mask(tmp_path / "big.png", np.array([[0, 299]]))
    assert path.suffix == ".tif" and read_label_image(path).dtype == np.uint16
    vol = np.zeros((3, 4, 5), np.int64)
    vol[1, 2, 3] = 1
    binary = ClassInfo.binary()
    path = binary.save_mask(tmp_path / "vol.png", vol)
    assert path.suffix == ".tif"
    np.testing.assert_array_equal(binary.decode(read_label_image(path)), vol)
    nii = binary.save_mask(tmp_path / "vol.nii.gz", vol)
    np.testing.assert_array_equal(binary.decode(read_label_image(nii)), vol)
    jpg = binary.save_mask(tmp_path / "m.jpg", vol[1])
    assert jpg.suffix == ".png"


def test_to_dict_round_trip():
    colors = [(1, 2, 3), (4, 5, 6)]
    info = ClassInfo(["a", "b"], colors, ignore_index=9, encoding="rgb", ignore_color=(0, 0, 0))
    again = ClassInfo.from_dict(json.loads(json.dumps(info.to_dict())))
    assert again == info
    assert ClassInfo(["x", "y", "z"]).colors[0] == (0, 0, 0)  # default colours always filled


def test_classes_file_formats(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"sky": [0, 0, 255], "road": "#804080"}))
    cf = read_classes_file(tmp_path / "a.json")
    assert cf.names == ["sky", "road"] and cf.colors == [(0, 0, 255), (128, 64, 128)]
    (tmp_path / "b.json").write_text(json.dumps(
        {"classes": ["bg", "cell", "void"], "ignore": "void", "encoding": "ids"}))
    cf = read_classes_file(tmp_path / "b.json")
    assert cf.names == ["bg", "cell"] and cf.ignore_index == 2 and cf.encoding == "ids"
    csv_text = "id,name,r,g,b,ignore\n0,sky,0,0,255,\n1,road,128,64,128,\n255,void,0,0,0,1\n"
    (tmp_path / "c.csv").write_text(csv_text)
    cf = read_classes_file(tmp_path / "c.csv")
    assert cf.names == ["sky", "road"] and cf.ignore_index == 255 and cf.ignore_color == (0, 0, 0)
    (tmp_path / "d.txt").write_text("# camvid\nSky\nBuilding\nvoid ignore\n")
    cf = read_classes_file(tmp_path / "d.txt")
    assert cf.names == ["Sky", "Building"] and cf.ignore_index == 2
    (tmp_path / "e.txt").write_text("sky 0 0 255\nroad 128 64 128\n")
    assert read_classes_file(tmp_path / "e.txt").colors[1] == (128, 64, 128)
    saved = tmp_path / "classes.json"
    saved.write_text(json.dumps(ClassInfo.binary().to_dict()))
    assert read_classes_file(saved).encoding == "binary255"


def test_bad_classes_files_name_file(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"sky": [0, 0, 999]}))
    with pytest.raises(DataError, match="bad.json.*0-255"):
        read_classes_file(tmp_path / "bad.json")
    (tmp_path / "gap.csv").write_text("id,name\n0,a\n2,b\n")
    with pytest.raises(DataError, match="contiguous"):
        read_classes_file(tmp_path / "gap.csv")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="broken.json"):
        read_classes_file(tmp_path / "broken.json")
