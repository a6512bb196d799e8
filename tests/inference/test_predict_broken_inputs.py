"""`unetkit predict` on a folder of broken files (tests/broken_corpus.py): every good file is predicted,
each broken one is named once with its reason, nothing stops the batch; and a run started again into the
same folder skips only the images whose outputs are all there, and adds to the COCO file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from broken_corpus import BROKEN, GOOD, assert_each_named_once, write_corpus
from inference_helpers import make_run, tiny_unet

import unetkit.inference.files as inference_files
from unetkit.cli import main
from unetkit.data.classes import ClassInfo
from unetkit.data.io import read_image, stem_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from deploy_helpers import make_restoration_run  # noqa: E402


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "in put"
    write_corpus(folder)
    return folder


def predict(run: Path, *args) -> int:
    return main(["predict", str(run), *map(str, args), "--tile-size", "32"])


def check_outcome(capsys, code: int, out: Path, broken: dict[str, str] = BROKEN) -> None:
    """Exit 1, no traceback, each of ``broken`` named once in the summary, every other file written."""
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.err
    assert_each_named_once(captured.out, broken)
    for name in set(GOOD) | set(BROKEN) - set(broken):
        assert read_image(out / f"{stem_of(name)}.png").size, name
    assert not [p for p in out.iterdir() if stem_of(p) in {stem_of(n) for n in broken}]
    assert f"failed {len(broken)}" in captured.out


def test_an_html_page_saved_as_tif_does_not_stop_the_batch(tmp_path, corpus, capsys, one_thread):
    """The failed download of the issue: the files after it are still predicted."""
    run = make_run(tmp_path, tiny_unet(1, 1), ClassInfo.binary())
    out = tmp_path / "out"
    code = predict(run, corpus / "good.png", corpus / "html page.tif", corpus / "one pixel.png", "--out", out)
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert_each_named_once(captured.out, {"html page.tif": "not a tiff"})
    assert (out / "good.png").is_file() and (out / "one pixel.png").is_file()


@pytest.mark.parametrize("options", [(), ("--instances", "--overlay", "--save-probabilities")])
def test_predict_names_each_broken_file_and_writes_every_good_one(tmp_path, corpus, capsys, options,
                                                                  one_thread):
    run = make_run(tmp_path, tiny_unet(1, 1), ClassInfo.binary())
    out = tmp_path / "out"
    check_outcome(capsys, predict(run, corpus, "--out", out, *options), out)
    if options:
        coco = json.loads((out / "objects_coco.json").read_text())
        assert sorted(i["file_name"] for i in coco["images"]) == sorted(GOOD)


def test_streamed_predict_names_each_broken_file(tmp_path, corpus, capsys, monkeypatch, one_thread):
    monkeypatch.setattr(inference_files, "STREAM_PIXELS", 1)  # every readable 2D TIFF is streamed
    run = make_run(tmp_path, tiny_unet(1, 1), ClassInfo.binary())
    out = tmp_path / "out"
    code = predict(run, corpus, "--out", out)
    assert (out / "float.tif").is_file()  # streamed: a TIFF mask
    (out / "float.tif").rename(out / "float.png")
    check_outcome(capsys, code, out)


def test_restoration_predict_names_each_broken_file(tmp_path, corpus, capsys, one_thread):
    run = make_restoration_run(tmp_path / "restore")
    out = tmp_path / "out"
    code = predict(run, corpus, "--out", out)
    (out / "float.tif").rename(out / "float.png")
    # A grey-level restoration network restores the luminance of colour images.
    grey_network = {k: v for k, v in BROKEN.items() if k not in ("colour.png", "palette.png")}
    check_outcome(capsys, code, out, grey_network)


def test_a_half_done_image_is_done_again_and_coco_keeps_earlier_images(tmp_path, corpus, capsys, one_thread):
    run = make_run(tmp_path, tiny_unet(1, 1), ClassInfo.binary())
    out = tmp_path / "out"
    assert predict(run, corpus / "good.png", corpus / "one pixel.png", "--out", out, "--instances") == 0
    # Killed between the mask and the objects of good.png: its mask is there, its objects are not.
    (out / "good_instances.tif").unlink()
    (out / "good_objects.csv").unlink()
    capsys.readouterr()
    assert predict(run, corpus / "good.png", corpus / "sixteen bit.png", "--out", out, "--instances") == 0
    captured = capsys.readouterr()
    assert "redoing" in captured.err and "predicted 2 file(s)" in captured.out
    assert (out / "good_instances.tif").is_file() and (out / "good_objects.csv").is_file()
    coco = json.loads((out / "objects_coco.json").read_text())
    names = [i["file_name"] for i in coco["images"]]
    assert sorted(names) == ["good.png", "one pixel.png", "sixteen bit.png"]
    assert len({i["id"] for i in coco["images"]}) == 3
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    assert {a["image_id"] for a in coco["annotations"]} <= {i["id"] for i in coco["images"]}
    # Everything done: a third run skips both, and the COCO file still holds all three images.
    assert predict(run, corpus / "good.png", corpus / "sixteen bit.png", "--out", out, "--instances") == 0
    assert "skipped 2" in capsys.readouterr().out
    again = json.loads((out / "objects_coco.json").read_text())
    assert sorted(i["file_name"] for i in again["images"]) == sorted(names)
    assert len(again["annotations"]) == len(coco["annotations"])


def test_a_file_in_the_way_of_the_coco_file_is_kept(tmp_path, corpus, capsys, one_thread):
    run = make_run(tmp_path, tiny_unet(1, 1), ClassInfo.binary())
    out = tmp_path / "out"
    out.mkdir()
    (out / "objects_coco.json").write_text("my notes")
    assert predict(run, corpus / "good.png", "--out", out, "--instances") == 1
    assert (out / "objects_coco.json").read_text() == "my notes"
    assert "objects_coco.json: exists but is not a COCO file" in capsys.readouterr().out
    assert (out / "good_instances.tif").is_file()
