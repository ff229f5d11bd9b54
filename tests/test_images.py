"""Every image Pillow reads becomes 8-bit RGB (or L) with EXIF orientation applied."""

import numpy as np
import pytest
from PIL import Image

from bnncli.errors import DataError
from bnncli.images.decode import load_image


def test_modes_become_rgb(tmp_path):
    Image.fromarray((np.arange(256 * 4).reshape(32, 32) * 64).astype(np.uint16)).save(tmp_path / "a.png")
    Image.new("CMYK", (8, 8), (0, 255, 0, 0)).save(tmp_path / "b.jpg")
    Image.new("P", (8, 8), 3).save(tmp_path / "c.gif")
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(tmp_path / "d.png")
    Image.new("L", (8, 8), 77).save(tmp_path / "e.bmp")
    Image.new("1", (8, 8), 1).save(tmp_path / "f.tiff")
    for f in sorted(tmp_path.iterdir()):
        img = load_image(f)
        assert img.mode == "RGB", f
    sixteen = np.asarray(load_image(tmp_path / "a.png", channels=1))
    assert sixteen.max() == 255 and sixteen.min() == 0  # 16-bit range kept, not clipped at 255
    assert tuple(np.asarray(load_image(tmp_path / "b.jpg"))[0, 0]) == (255, 0, 255)
    assert tuple(np.asarray(load_image(tmp_path / "d.png"))[0, 0]) == (10, 20, 30)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (20, 40)


def test_bad_files_raise_one_line_data_errors(tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:200])
    for name, needle in [("text.jpg", "not an image format"), ("cut.jpg", "cannot read"), ("missing.png", "not found")]:
        with pytest.raises(DataError, match=needle) as e:
            load_image(tmp_path / name)
        assert "\n" not in str(e.value) and name in str(e.value)
    with pytest.raises(DataError, match="folder"):
        load_image(tmp_path)
