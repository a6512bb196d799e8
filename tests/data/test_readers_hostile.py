"""The readers on hostile files: the broken corpus (tests/broken_corpus.py) gives a :class:`DataError`
with its reason, headers claiming huge sizes are refused before anything is allocated, and (property-based)
whatever bytes follow a PNG, TIFF or JPEG signature, or replace part of a valid file, reading gives a
valid array or raises :class:`DataError`, nothing else."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from broken_corpus import BROKEN, GOOD, png_bytes, tiff_bytes, tiff_claiming, write_corpus
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import unetkit.data.io as data_io
from unetkit.data.io import DataError, is_volume_path, read_image, read_label_image

SIGNATURES = {
    ".png": b"\x89PNG\r\n\x1a\n",
    ".tif": b"II*\x00",
    ".tiff": b"MM\x00*",
    ".jpg": b"\xff\xd8\xff",
}


def jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


_GREY = np.random.default_rng(0).integers(0, 256, (12, 10), dtype=np.uint8)
VALID = {
    ".png": png_bytes(_GREY),
    ".tif": tiff_bytes(_GREY, compression="zlib"),
    ".tiff": tiff_bytes(np.stack([_GREY, _GREY]).astype(np.float32)),
    ".jpg": jpeg_bytes(_GREY),
}


def read_all_ways(suffix: str, data: bytes) -> None:
    """Each reader gives a non-empty array or raises DataError (small size limits: nothing big is made)."""
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(data_io, "MAX_DECODED_BYTES", 2**24)
        patch.setattr(Image, "MAX_IMAGE_PIXELS", 2**20)
        path = Path(folder) / f"fuzzed{suffix}"
        path.write_bytes(data)
        for read in (is_volume_path, read_image, read_label_image):
            try:
                result = read(path)
            except DataError as exc:
                assert str(path) in str(exc)
                continue
            if read is not is_volume_path:
                assert isinstance(result, np.ndarray) and result.size > 0


#: Corpus files the readers take: the rest fails later, against a model or a dataset.
READABLE = ("colour.png", "palette.png", "stack.tif", "nan.tif", "inf.tif")


def test_the_broken_corpus_gives_data_errors_with_reasons(tmp_path):
    for path in write_corpus(tmp_path):
        if path.name in GOOD or path.name in READABLE:
            assert read_image(path).size
            continue
        with pytest.raises(DataError) as error:
            read_image(path)
        assert str(path) in str(error.value) and BROKEN[path.name] in str(error.value).lower()


def test_float_labels_beyond_integers_are_refused(tmp_path):
    path = tmp_path / "labels.tif"
    path.write_bytes(tiff_bytes(np.array([[1e30, 0.0]], np.float32)))
    with pytest.raises(DataError, match="2\\*\\*31"):
        read_label_image(path)


def test_a_header_claiming_more_than_the_limit_is_refused_before_allocating(tmp_path, monkeypatch):
    import tracemalloc

    monkeypatch.setattr(data_io, "MAX_DECODED_BYTES", 2**20)
    path = tmp_path / "claims.tif"
    path.write_bytes(tiff_claiming(2**12, 2**12))  # 16 MiB claimed, 16 bytes given
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="claims 4096x4096 values"):
            read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


#: Fast, and the same examples on every run (no example database written to the working tree).
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None)


@FUZZ
@given(suffix=st.sampled_from(sorted(SIGNATURES)), tail=st.binary(max_size=512))
def test_any_bytes_after_a_signature_read_or_raise_data_error(suffix, tail):
    read_all_ways(suffix, SIGNATURES[suffix] + tail)


@FUZZ
@given(suffix=st.sampled_from(sorted(VALID)), where=st.floats(0, 1), patch=st.binary(min_size=1, max_size=16),
       cut=st.booleans())
def test_a_damaged_valid_file_reads_or_raises_data_error(suffix, where, patch, cut):
    data = VALID[suffix]
    start = int(where * (len(data) - 1))
    damaged = data[:start] if cut else data[:start] + patch + data[start + len(patch):]
    read_all_ways(suffix, damaged)
