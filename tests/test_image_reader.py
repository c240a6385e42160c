"""The one image reader on odd files: 16-bit PNGs scaled (not clipped), alpha and palette transparency dropped, EXIF
orientation applied, CMYK to RGB, grey/RGB mixed to the asked channels; every unreadable kind counted and named,
skipped with exactly one stderr line (no Python warning) or rejected with a one-line error; `fid --on-corrupt`;
`ImageSet.from_arrays` refusing NaN, inf and out-of-range pixels instead of wrapping them."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import isolated_data_env  # noqa: F401 (fixture)
from PIL import Image, ImageFile

from diffbalance.data.image_folder import decode_images, load_image_folder, read_image
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError

# torchvision decodes 16-bit PNGs (PIL keeps only the high byte of colour samples) and calls that deprecated on every
# call; decode_images silences it, read_image called directly does not
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")
RNG = np.random.default_rng(0)
# 16-bit samples and what they must become: round(v / 257); 65280 → 254 tells scaling from PIL's high byte (255)
V16 = np.array([[0, 257, 32768, 65535], [384, 65280, 257 * 100, 1000]], dtype=np.uint16)
V8 = np.array([[0, 1, 128, 255], [1, 254, 100, 4]], dtype=np.uint8)


def png_bytes(a: np.ndarray, color_type: int, bit_depth: int) -> bytes:
    """A minimal PNG (IHDR, one IDAT, IEND) with any bit depth PIL cannot write, e.g. 16-bit RGB.
    color_type: 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA; a: (H, W) or (H, W, C)."""
    h, w = a.shape[:2]
    sample = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + np.ascontiguousarray(row).astype(sample).tobytes() for row in a)  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def chw(a: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) uint8 → (C, H, W) tensor."""
    return torch.from_numpy(a[:, :, None] if a.ndim == 2 else a).permute(2, 0, 1)


def blocks(h: int, w: int) -> np.ndarray:
    """An (h, w, 3) image of flat 8×8 colour blocks (JPEG's own blocks, so it keeps them) with a red marker block at
    the top left."""
    colours = RNG.integers(40, 216, (h // 8, w // 8, 3), dtype=np.uint8)
    colours[0, 0] = (250, 10, 10)
    return np.kron(colours, np.ones((8, 8, 1), dtype=np.uint8))


# --- pixel values ------------------------------------------------------------------------------------
def test_8bit_grey_and_rgb_pngs_round_trip_exactly(tmp_path):
    grey, rgb = RNG.integers(0, 256, (5, 7), dtype=np.uint8), RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert torch.equal(read_image(tmp_path / "g.png"), chw(grey))
    assert torch.equal(read_image(tmp_path / "c.png"), chw(rgb))


@pytest.mark.parametrize("color_type, channels", [(0, 1), (4, 2), (2, 3), (6, 4)], ids=["grey", "grey+alpha",
                                                                                        "rgb", "rgba"])
def test_16bit_pngs_are_scaled_not_clipped(tmp_path, color_type, channels):
    samples = np.stack([V16 + np.uint16(c) for c in range(channels)], -1)  # channels differ by a step or two
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(samples, color_type, 16))
    assert path.read_bytes()[24] == 16  # IHDR: really 16 bits per sample
    x = read_image(path)
    colour = channels >= 3
    expected = np.rint(samples[:, :, : 3 if colour else 1].astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert torch.equal(x, chw(expected))  # alpha dropped, each sample round(v · 255 / 65535)
    if not colour:
        assert x[0].tolist() == V8.tolist()


def test_16bit_grey_written_by_pil_and_as_tiff_are_scaled(tmp_path):
    image = Image.fromarray(V16)
    assert image.mode == "I;16"
    image.save(tmp_path / "g.png")
    image.save(tmp_path / "g.tif")
    assert Image.open(tmp_path / "g.png").mode == "I;16" and Image.open(tmp_path / "g.tif").mode.startswith("I;16")
    for name in ("g.png", "g.tif"):
        assert read_image(tmp_path / name)[0].tolist() == V8.tolist()  # not {0, 255}
    assert read_image(tmp_path / "g.png", channels=3).shape == (3, 2, 4)


def test_rgba_and_la_drop_alpha_keeping_the_stored_colour(tmp_path):
    rgba = RNG.integers(0, 256, (6, 6, 4), dtype=np.uint8)
    rgba[0, :, 3] = 0  # fully transparent pixels keep their colour too
    Image.fromarray(rgba).save(tmp_path / "c.png")
    Image.fromarray(rgba[:, :, [0, 3]]).convert("LA").save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "LA"
    assert torch.equal(read_image(tmp_path / "c.png"), chw(rgba[:, :, :3]))
    assert torch.equal(read_image(tmp_path / "g.png"), chw(rgba[:, :, 0]))


@pytest.mark.parametrize("transparency", [bytes([0, 255, 128, 255]), 2, None], ids=["alpha-bytes", "index", "none"])
def test_palette_images_go_through_the_palette_and_drop_transparency(tmp_path, transparency):
    palette = np.array([[250, 0, 0], [0, 250, 0], [0, 0, 250], [255, 255, 255]], dtype=np.uint8)
    index = RNG.integers(0, 4, (5, 6), dtype=np.uint8)
    image = Image.frombytes("P", (6, 5), index.tobytes())
    image.putpalette(palette.reshape(-1).tolist())
    extra = {} if transparency is None else {"transparency": transparency}
    image.save(tmp_path / "p.png", **extra)
    opened = Image.open(tmp_path / "p.png")
    assert opened.mode == "P" and ("transparency" in opened.info) == (transparency is not None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = read_image(tmp_path / "p.png")
    assert torch.equal(x, chw(palette[index])) and caught == []  # PIL's transparency warning avoided
    luma = np.array(Image.fromarray(palette[index]).convert("L"))
    assert torch.equal(read_image(tmp_path / "p.png", channels=1), chw(luma))


def test_mixed_grey_and_rgb_folder_becomes_the_asked_channels(tmp_path):
    grey, rgb = RNG.integers(0, 256, (4, 4), dtype=np.uint8), RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    Image.fromarray(grey).save(tmp_path / "a" / "0.png")
    Image.fromarray(rgb).save(tmp_path / "a" / "1.png")
    luma = np.array(Image.fromarray(rgb).convert("L"))  # ITU-R 601-2, PIL's
    assert np.abs(luma.astype(int) - (rgb @ [0.299, 0.587, 0.114])).max() <= 1
    for channels, first, second in [(None, np.stack([grey] * 3, -1), rgb), (3, np.stack([grey] * 3, -1), rgb),
                                    (1, grey, luma)]:
        data = load_image_folder(tmp_path, channels=channels)
        assert torch.equal(data.images, torch.stack([chw(first), chw(second)])), channels


@pytest.mark.parametrize("orientation, turns", [(3, 2), (6, -1), (8, 1)])  # np.rot90 turns, + = anticlockwise
def test_exif_orientation_is_applied(tmp_path, orientation, turns):
    stored = blocks(16, 32)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "r.jpg", quality=95, subsampling=0, exif=exif)
    x = read_image(tmp_path / "r.jpg")
    shown = np.rot90(stored, turns)
    assert x.shape == (3, *shown.shape[:2])
    assert (x - chw(shown.copy()).to(torch.int16)).abs().float().mean() < 4  # JPEG-close to the turned image
    h, w = shown.shape[:2]
    corner = {2: (h - 2, w - 2), -1: (1, w - 2), 1: (h - 2, 1)}[turns]  # where the top-left marker ends up
    assert x[0, corner[0], corner[1]] > 200 and x[1:, corner[0], corner[1]].max() < 60


def test_cmyk_jpeg_becomes_rgb_close_to_the_source(tmp_path):
    rgb = blocks(16, 16)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "k.jpg", quality=95, subsampling=0)
    assert Image.open(tmp_path / "k.jpg").mode == "CMYK"
    x = read_image(tmp_path / "k.jpg")
    assert x.shape == (3, 16, 16) and (x.to(torch.int16) - chw(rgb)).abs().float().mean() < 4


def test_float_images_are_unreadable_and_32bit_integer_ones_scaled(tmp_path):
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(tmp_path / "f.tif")
    Image.fromarray(V16.astype(np.int32)).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F" and Image.open(tmp_path / "i.tif").mode == "I"
    assert read_image(tmp_path / "i.tif")[0].tolist() == V8.tolist()
    _, bad = decode_images([tmp_path / "f.tif"], None, None)
    assert [b.reason for b in bad] == ["float pixels (mode F), range unknown"]


# --- unreadable files ----------------------------------------------------------------------------------
def _png(size: int = 8) -> bytes:
    out = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.fromarray(blocks(16, 16)).save(out, "JPEG")
    return out.getvalue()


def _corrupt(data: bytes) -> bytes:
    return data[:100] + b"\xff" * 8 + data[108:]  # inside the compressed pixel data


BAD_FILES = {  # kind: (file name, how to make it, the reason the report gives)
    "corrupt": ("c.png", lambda p: p.write_bytes(_corrupt(_png())), "broken data stream"),
    "truncated-png": ("t.png", lambda p: p.write_bytes(_png()[:150]), "truncated"),
    "truncated-jpeg": ("t.jpg", lambda p: p.write_bytes(_jpeg()[:-60]), "truncated"),
    "truncated-png16": ("t16.png", lambda p: p.write_bytes(png_bytes(RNG.integers(0, 65535, (8, 8), dtype=np.uint16)
                                                                     .astype(np.uint16), 0, 16)[:-40]),
                        "Out of bound read in decode_png"),
    "zero-bytes": ("z.png", lambda p: p.write_bytes(b""), "empty file"),
    "text": ("notes.png", lambda p: p.write_text("not an image"), "not an image"),
    "folder": ("d.png", lambda p: p.mkdir(), "a folder"),
    "broken-link": ("l.png", lambda p: p.symlink_to(p.parent / "gone.png"), "missing"),
    "bomb-error": ("b.png", lambda p: p.write_bytes(_png(16)), "over PIL's limit"),  # 256 px > 2 × 100
    "bomb-warning": ("w.png", lambda p: p.write_bytes(_png(16)), "over PIL's limit"),  # 200 < 256 px < 400
}


def _folder_with(tmp_path: Path, kind: str, monkeypatch) -> Path:
    """root/a: two good 8×8 PNGs; root/b: one good PNG and the bad file."""
    root = tmp_path / "root"
    for cls, n in (("a", 2), ("b", 1)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / cls / f"ok{i}.png").write_bytes(_png())
    name, make, _ = BAD_FILES[kind]
    make(root / "b" / name)
    if kind.startswith("bomb"):  # good images are 64 px
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 if kind == "bomb-error" else 200)
    return root


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_each_unreadable_kind_is_skipped_with_one_line(tmp_path, kind, monkeypatch, capfd):
    root = _folder_with(tmp_path, kind, monkeypatch)
    name, _, reason = BAD_FILES[kind]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_image_folder(root)
    assert [str(w.message) for w in caught] == []  # a notice, never a Python warning
    assert len(data) == 3 and data.counts() == [2, 1] and data.meta["unreadable_count"] == 1
    assert data.meta["unreadable_first"] == [str(root / "b" / name)]
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: skipped 1 unreadable image(s) of 4 in ")
    assert f"first: b/{name} (" in err and reason in err
    assert err == f"note: skipped {data.meta['unreadable_report']}\n"


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_each_unreadable_kind_is_a_one_line_error_when_asked(tmp_path, kind, monkeypatch, capfd):
    root = _folder_with(tmp_path, kind, monkeypatch)
    with pytest.raises(DiffbalanceError, match=rf"1 unreadable image\(s\) of 4 .*b/{BAD_FILES[kind][0]}") as err:
        load_image_folder(root, on_corrupt="error")
    assert "\n" not in str(err.value) and "on_corrupt" in str(err.value)
    assert capfd.readouterr().err == ""  # the error alone: no notice before it


def test_many_unreadable_files_name_the_first_three_on_one_line_however_long_the_path(tmp_path, capfd):
    root = tmp_path / ("a-very-long-folder-name-" * 6) / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "ok.png").write_bytes(_png())
    for i in range(5):
        (root / "a" / f"bad{i}.png").write_bytes(b"nope")
    data = load_image_folder(root)
    err = capfd.readouterr().err
    assert len(err) > 200 and err.count("\n") == 1  # no wrapping at the console width
    assert "5 unreadable image(s) of 6" in err and "a/bad2.png" in err and "bad3" not in err and err.endswith(", ...\n")
    assert data.meta["unreadable_count"] == 5 and len(data.meta["unreadable_first"]) == 3


def test_a_folder_of_nothing_readable_is_one_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"")
    with pytest.raises(DiffbalanceError, match=r"no readable images: 1 unreadable image\(s\) of 1 .*empty file"):
        load_image_folder(tmp_path)


def test_truncated_files_fail_even_if_someone_allowed_them(tmp_path, monkeypatch):
    (tmp_path / "t.jpg").write_bytes(_jpeg()[:-60])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # another library's choice
    images, bad = decode_images([tmp_path / "t.jpg"], None, None)
    assert images == [None] and bad[0].reason == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # put back afterwards


def test_cache_hit_repeats_the_notice_as_one_line(tmp_path, isolated_data_env, capfd):
    from diffbalance.data.sources import DataConfig, load_train_test

    root = tmp_path / "data"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            (root / cls / f"{i}.png").write_bytes(_png())
    (root / "b" / "bad.png").write_text("not an image")
    config = DataConfig(name="folder", root=str(root), image_size=8)
    load_train_test(config)
    first = capfd.readouterr().err
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, test = load_train_test(config)
    again = capfd.readouterr().err
    assert train.meta["cache"]["hit"] and caught == []
    assert first.count("\n") == 1 and again.count("\n") == 1  # train and test share one report: printed once
    assert again == first.replace("\n", " (cached decode)\n")


# --- fid on odd folders ----------------------------------------------------------------------------------
def _fid_folder(root: Path, bad: bool) -> Path:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            (root / cls / f"{i}.png").write_bytes(_png())
    (root / "a" / "sixteen.png").write_bytes(png_bytes(np.full((8, 8, 3), 40000, dtype=np.uint16), 2, 16))
    if bad:
        (root / "b" / "half.png").write_bytes(_png()[:150])
    return root


def test_load_image_set_rejects_unreadable_folders_unless_asked_to_skip(tmp_path):
    from diffbalance.experiment.image_sets import load_image_set

    root = _fid_folder(tmp_path / "A", bad=True)
    with pytest.raises(DiffbalanceError, match="half.png"):
        load_image_set(str(root))
    data = load_image_set(str(root), on_corrupt="skip")
    assert len(data) == 13 and data.meta["unreadable_count"] == 1
    assert data.images[6].unique().tolist() == [round(40000 / 257)]  # the 16-bit PNG, scaled


def test_fid_cli_on_corrupt_error_by_default_skip_on_request(tmp_path, capsys):
    from diffbalance.cli.main import main

    a, b = _fid_folder(tmp_path / "A", bad=True), _fid_folder(tmp_path / "B", bad=False)
    args = ["fid", str(a), str(b), "--features", "random", "--device", "cpu", "--no-cache"]
    with pytest.raises(SystemExit) as done:
        main(args)
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1 and "half.png (truncated)" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as done:
        main([*args, "--on-corrupt", "ignore"])
    assert done.value.code == 2 and "on_corrupt 'ignore' is unknown" in capsys.readouterr().err
    main([*args, "--on-corrupt", "skip", "--json", str(tmp_path / "fid.json")])
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and out.err.startswith("note: skipped 1 unreadable image(s) of 14")
    assert "skipped unreadable: a 1, b 0" in out.out and "n_a: 13" in out.out


# --- from_arrays ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, match", [
    (np.full((2, 4, 4), np.nan, dtype=np.float32), "NaN or infinite"),
    (np.full((2, 4, 4), np.inf), "NaN or infinite"),
    (np.full((2, 4, 4), 1.5), r"\[0, 1\], X spans 1.5–1.5"),
    (np.full((2, 4, 4), -0.1, dtype=np.float16), r"\[0, 1\]"),
    (np.full((2, 4, 4), 256, dtype=np.int64), "0–255, X \\(int64\\) spans 256–256"),
    (np.full((2, 4, 4), -1, dtype=np.int8), "0–255"),
    (np.full((2, 4, 4), 65535, dtype=np.uint16), "16-bit"),
    (np.full((2, 4, 4), "a"), "dtype <U1, not a pixel type"),
    (np.full((2, 4, 4), 1 + 1j), "not a pixel type"),
], ids=["nan", "inf", "float>1", "float<0", "int64-256", "int8-neg", "uint16", "str", "complex"])
def test_from_arrays_rejects_what_would_be_mangled(bad, match):
    with pytest.raises(DiffbalanceError, match=match) as err:
        ImageSet.from_arrays(bad, [0, 1])
    assert "\n" not in str(err.value) and " — fix: " in str(err.value)


@pytest.mark.parametrize("x, expected", [
    (np.array([[[0, 7], [128, 255]]], dtype=np.uint8), [[0, 7], [128, 255]]),
    (np.array([[[0, 7], [128, 255]]], dtype=np.int64), [[0, 7], [128, 255]]),
    (np.array([[[0, 7], [128, 255]]], dtype=np.uint16), [[0, 7], [128, 255]]),
    (np.array([[[False, True], [True, False]]]), [[0, 255], [255, 0]]),
    (np.array([[[0.0, 0.5], [1 / 255, 1.0]]]), [[0, 128], [1, 255]]),
    (torch.tensor([[[0.0, 0.5], [1 / 255, 1.0]]], dtype=torch.bfloat16), [[0, 128], [1, 255]]),
], ids=["uint8", "int64", "uint16", "bool", "float64", "torch-bfloat16"])
def test_from_arrays_reads_every_pixel_dtype_explicitly(x, expected):
    data, layout = ImageSet.from_arrays(x, [3])
    assert layout == "NHW" and data.images[0, 0].tolist() == expected and data.images.dtype == torch.uint8


def test_from_arrays_refuses_ragged_lists():
    with pytest.raises(DiffbalanceError, match="different shapes"):
        ImageSet.from_arrays([np.zeros((4, 4)), np.zeros((5, 5))], [0, 1])
