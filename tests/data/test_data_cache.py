import os
import time

import numpy as np
import pytest
from conftest import write_png

from cxraug.core.errors import DataError
from cxraug.data.adapters import load_dataset
from cxraug.data.cache import cached_images
from cxraug.data.transforms import load_grayscale, resize_square


def test_cache_matches_direct_decode_and_is_reused(kermany_fixture, tmp_path):
    ds = load_dataset(kermany_fixture)
    imgs, kept, skipped = cached_images(ds, 16, tmp_path, progress=False)
    assert imgs.shape == (24, 16, 16) and imgs.dtype == np.uint8 and not skipped
    np.testing.assert_array_equal(imgs[3], resize_square(load_grayscale(ds.paths[3]), 16))
    stores = sorted((tmp_path / "images").glob("*.u8"))
    assert len(stores) == 1
    mtime = stores[0].stat().st_mtime_ns
    again, _, _ = cached_images(ds, 16, tmp_path, progress=False)
    assert stores[0].stat().st_mtime_ns == mtime  # not rebuilt
    np.testing.assert_array_equal(again, imgs)


def test_cache_invalidated_when_an_input_changes(kermany_fixture, tmp_path):
    ds = load_dataset(kermany_fixture)
    first, _, _ = cached_images(ds, 16, tmp_path, progress=False)
    first = np.array(first)
    time.sleep(0.01)
    write_png(ds.paths[0], value=255)  # same file name, new content
    os.utime(ds.paths[0], ns=(time.time_ns(), time.time_ns()))
    second, _, _ = cached_images(ds, 16, tmp_path, progress=False)
    assert (second[0] == 255).all() and not (first[0] == 255).all()
    np.testing.assert_array_equal(second[1:], first[1:])
    assert len(list((tmp_path / "images").glob("*.u8"))) == 2
    cached_images(ds, 8, tmp_path, progress=False)  # another size -> another store
    assert len(list((tmp_path / "images").glob("*.u8"))) == 3


def test_corrupt_image_error_or_skip(kermany_fixture, tmp_path):
    ds = load_dataset(kermany_fixture)
    ds.paths[5].write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match="--skip-bad"):
        cached_images(ds, 16, tmp_path, progress=False)
    imgs, kept, skipped = cached_images(ds, 16, tmp_path, skip_bad=True, progress=False)
    assert len(kept) == 23 and imgs.shape[0] == 23 and skipped == [str(ds.paths[5])]
    assert ds.ids[5] not in kept.ids


def test_missing_image_and_bad_size(kermany_fixture, tmp_path):
    ds = load_dataset(kermany_fixture)
    ds.paths[0].unlink()
    with pytest.raises(DataError, match="image file not found"):
        cached_images(ds, 16, tmp_path, progress=False)
    with pytest.raises(DataError, match="between 8 and 4096"):
        cached_images(ds, 2, tmp_path, progress=False)
