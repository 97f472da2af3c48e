import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxraug.data import transforms as T


def _dicom(path, pixels, photometric, window=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.SamplesPerPixel, ds.PhotometricInterpretation = "DX", 1, photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_dicom_monochrome1_is_inverted(tmp_path):
    px = np.zeros((16, 16), np.uint16)
    px[:, :8] = 4000  # left half: high values (dark in MONOCHROME1)
    m1 = T.load_grayscale(_dicom(tmp_path / "m1.dcm", px, "MONOCHROME1"))
    m2 = T.load_grayscale(_dicom(tmp_path / "m2.dcm", px, "MONOCHROME2"))
    assert m1.dtype == np.uint8 and m1.shape == (16, 16)
    assert m1[:, :8].mean() < m1[:, 8:].mean()  # inverted: high values become dark
    assert m2[:, :8].mean() > m2[:, 8:].mean()
    np.testing.assert_array_equal(m1, 255 - m2)


def test_dicom_voi_window_applied(tmp_path):
    px = np.tile(np.arange(0, 4000, 250, dtype=np.uint16), (16, 1))
    img = T.load_grayscale(_dicom(tmp_path / "w.dcm", px, "MONOCHROME2", window=(1000, 500)))
    # outside the window everything saturates: values >= 1250 are all white
    assert (img[:, px[0] >= 1250] == 255).all() and (img[:, px[0] <= 750] == 0).all()


def test_truncated_and_missing_images_fail_with_file_name(tmp_path):
    good = tmp_path / "a.png"
    Image.fromarray(np.full((32, 32), 100, np.uint8)).save(good)
    bad = tmp_path / "b.png"
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(T.ImageReadError, match="b.png"):
        T.load_grayscale(bad)
    with pytest.raises(T.ImageReadError, match="not found"):
        T.load_grayscale(tmp_path / "nope.png")


def test_16bit_png_rescaled(tmp_path):
    a = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16) * 16
    Image.fromarray(a).save(tmp_path / "x.png")
    out = T.load_grayscale(tmp_path / "x.png")
    assert out.dtype == np.uint8 and out.max() == 255 and out.min() == 0


@pytest.mark.parametrize("mode", ["pad", "crop"])
def test_resize_square_preserves_aspect(mode):
    img = np.zeros((40, 80), np.uint8)
    img[:, :40] = 255  # left half white
    out = T.resize_square(img, 20, mode)
    assert out.shape == (20, 20)
    if mode == "pad":
        assert out[:5].max() == 0 and out[-5:].max() == 0  # black bars top and bottom
        assert out[10, :8].mean() > 200 and out[10, 12:].mean() < 50  # left still white: no flip
    else:
        assert out[:, :8].mean() > 200 and out[:, 12:].mean() < 50


def test_range_round_trips():
    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    m = T.uint8_to_model(u8)
    assert m.shape == (1, 16, 16) and float(m.min()) == -1 and float(m.max()) == 1
    np.testing.assert_array_equal(T.model_to_uint8(m), u8)
    x = T.uint8_to_xrv(u8)
    assert float(x.min()) == -1024 and float(x.max()) == 1024
    c = T.uint8_to_classifier(u8)
    assert abs(float(c.mean())) < 0.1
    rgb = T.gray_to_rgb(m.unsqueeze(0))
    assert rgb.shape == (1, 3, 16, 16) and torch.allclose(T.rgb_to_gray(rgb), m.unsqueeze(0))


def test_range_warning_once():
    import warnings

    where = "test-batch-once"
    with pytest.warns(UserWarning, match="expected pixels in"):
        T.check_model_range(torch.full((2, 1, 4, 4), 200.0), where=where)
    with warnings.catch_warnings(record=True) as seen:  # the same place again: silent
        warnings.simplefilter("always")
        T.check_model_range(torch.full((2, 1, 4, 4), 300.0), where=where)
    assert not [w for w in seen if "expected pixels in" in str(w.message)]
    with pytest.warns(UserWarning, match="other-place"):  # another place still warns
        T.check_model_range(torch.full((2, 1, 4, 4), 200.0), where="other-place")
