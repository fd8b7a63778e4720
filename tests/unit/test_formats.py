"""A corpus of odd and broken files, each decoded or the right error row; and query results out."""

from __future__ import annotations

import io
import json
import zlib

import numpy as np
import pytest
from PIL import Image

from embedlake.tasks.backbones import resolve_backbone
from embedlake.tasks.decode import crop_plans
from embedlake.tasks.decode_pool import DecodeJob, iter_decoded
from embedlake.tasks.discover import DEFAULT_MAX_PIXELS, discover_files
from tests.conftest import jpeg_bytes, photo

pytestmark = pytest.mark.unit


def _save(img, fmt, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def _corpus() -> dict[str, bytes]:
    cat = photo("chelsea.png")
    gradient16 = Image.fromarray(np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (256, 1)))
    transparent = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    palette = cat.convert("P", palette=Image.ADAPTIVE, colors=64)
    frames = [cat.resize((120, 80)), Image.new("RGB", (120, 80), (255, 0, 0))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100)
    tiff = io.BytesIO()
    cat.save(tiff, "TIFF", save_all=True, append_images=[Image.new("RGB", cat.size, (0, 255, 0))])
    floats = Image.fromarray(np.linspace(-3.0, 7.0, 200 * 200, dtype=np.float32).reshape(200, 200))
    png = _save(cat, "PNG")
    bad_crc = bytearray(png)
    idat = bad_crc.find(b"IDAT")
    bad_crc[idat + 40 : idat + 60] = b"\x00" * 20
    return {
        "cmyk.jpg": _save(cat.convert("CMYK"), "JPEG"),
        "progressive.jpg": _save(cat, "JPEG", progressive=True, quality=85),
        "gray16.png": _save(gradient16, "PNG"),
        "palette_alpha.png": _save(palette, "PNG", transparency=0),
        "transparent.png": _save(transparent, "PNG"),
        "la.png": _save(cat.convert("LA"), "PNG"),
        "photo.webp": _save(cat, "WEBP"),
        "animated.gif": gif.getvalue(),
        "photo.bmp": _save(cat, "BMP"),
        "pages.tif": tiff.getvalue(),
        "float.tif": _save(floats, "TIFF"),
        "rotated.jpg": _rotated_jpeg(),
        "empty.jpg": b"",
        "text.txt": b"hello",
        "truncated.png": png[: len(png) // 2],
        "bad_crc.png": bytes(bad_crc),
        "hangs.slow": b"SLOWIMG1" + b"\x00" * 100,
        "bomb.png": _bomb_png(),
    }


def _rotated_jpeg() -> bytes:
    """Stored 400x200 (red left, blue right) with EXIF orientation 6 (rotate 90 clockwise)."""
    arr = np.zeros((200, 400, 3), np.uint8)
    arr[:, :200] = (255, 0, 0)
    arr[:, 200:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(Image.fromarray(arr), "JPEG", exif=exif, quality=95)


def _bomb_png() -> bytes:
    """A 20000 x 20000 1-bit PNG (400 M pixels) in a few hundred kilobytes: a decompression bomb."""
    width = height = 20000
    row = b"\x00" + b"\x00" * (width // 8)
    raw = zlib.compress(row * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for name, data in _corpus().items():
        (folder / name).write_bytes(data)
    import tests.slow_plugin  # noqa: F401  (discover must recognise the header here too)

    rows = {r["path"]: r for r in discover_files(folder)}
    plans = crop_plans({"mobilenet_v1": resolve_backbone("mobilenet_v1").data_config()})
    jobs = [DecodeJob(p, folder / p) for p, r in rows.items() if r["status"] == "ok"]
    results = {
        d.image_id: d
        for d in iter_decoded(
            jobs,
            plans,
            workers=2,
            timeout=3,
            max_pixels=DEFAULT_MAX_PIXELS,
            plugins=["tests.slow_plugin"],
        )
    }
    return rows, results


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("empty.jpg", "empty_file"),
        ("text.txt", "not_an_image"),
        ("bomb.png", "decompression_bomb"),
    ],
)
def test_header_errors(decoded, name, code):
    rows, _ = decoded
    assert (rows[name]["status"], rows[name]["error_code"]) == ("error", code)
    assert rows[name]["error_message"]


@pytest.mark.parametrize(
    ("name", "code"),
    [("truncated.png", "truncated"), ("bad_crc.png", "corrupt"), ("hangs.slow", "timeout")],
)
def test_decode_errors(decoded, name, code):
    _, results = decoded
    assert results[name].crops is None
    assert results[name].error[0] == code


@pytest.mark.parametrize(
    "name",
    [
        "cmyk.jpg",
        "progressive.jpg",
        "gray16.png",
        "palette_alpha.png",
        "transparent.png",
        "la.png",
        "photo.webp",
        "animated.gif",
        "photo.bmp",
        "pages.tif",
        "float.tif",
        "rotated.jpg",
    ],
)
def test_decodes_to_an_rgb_crop(decoded, name):
    rows, results = decoded
    assert rows[name]["status"] == "ok", rows[name]
    crop = results[name].crops["mobilenet_v1"]
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8


def test_sixteen_bit_is_scaled_not_clipped(decoded):
    crop = decoded[1]["gray16.png"].crops["mobilenet_v1"].astype(float)
    assert 60 < crop.mean() < 200 and crop.min() < 40 and crop.max() > 215


def test_float_images_are_scaled_to_their_range(decoded):
    crop = decoded[1]["float.tif"].crops["mobilenet_v1"].astype(float)
    assert crop.max() - crop.min() > 100


def test_alpha_is_composited_on_white(decoded):
    crop = decoded[1]["transparent.png"].crops["mobilenet_v1"]
    assert (crop == 255).all()


def test_first_frame_and_first_page(decoded):
    _, results = decoded
    assert results["pages.tif"].crops["mobilenet_v1"][..., 1].mean() < 200  # not the green page
    gif = results["animated.gif"].crops["mobilenet_v1"]
    assert not ((gif[..., 0] > 200) & (gif[..., 1] < 50)).all()  # not the red frame
    assert decoded[0]["animated.gif"]["n_frames"] == 2


def test_exif_orientation_is_applied(decoded):
    crop = decoded[1]["rotated.jpg"].crops["mobilenet_v1"].astype(int)
    # rotated 90 clockwise: red on top, blue below (stored: red left, blue right)
    top, bottom = crop[5, 112], crop[-5, 112]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def test_a_hung_decoder_costs_only_its_file(decoded):
    _, results = decoded
    ok = [name for name, d in results.items() if d.crops is not None]
    assert len(ok) == 12  # every good file decoded although a worker was killed


def test_large_jpegs_decode_at_reduced_size_close_to_full(tmp_path):
    from embedlake.tasks.decode import decode_for_backbones

    big = photo("chelsea.png").resize((2400, 1800), Image.BICUBIC)
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_bytes(big, 92))
    plans = crop_plans({"xception": resolve_backbone("xception").data_config()})
    reduced = decode_for_backbones(path, plans, DEFAULT_MAX_PIXELS)["xception"].astype(float)
    full = decode_for_backbones(path, plans, DEFAULT_MAX_PIXELS, reduce_jpeg=False)["xception"]
    assert np.abs(reduced - full.astype(float)).mean() < 3.0  # of 255


# Query results out (tasks/render.py): values as DuckDB returns them, not as pandas casts them


def _result(sql: str):
    import duckdb

    with duckdb.connect() as con:
        return con.sql(sql).to_arrow_table()


def test_json_numbers_stay_numbers(capsys):
    from embedlake.tasks.render import write_result

    # sum(BIGINT) is a HUGEINT and reaches Arrow as decimal128(38, 0)
    table = _result(
        "SELECT sum(x) AS total, sum(x)::DECIMAL(10, 2) AS money, avg(x) AS mean, "
        "'nan'::DOUBLE AS nan FROM (VALUES (1::BIGINT), (2)) t(x)"
    )
    write_result(table, "json")
    line = capsys.readouterr().out
    assert json.loads(line) == {"total": 3, "money": 3.0, "mean": 1.5, "nan": None}
    assert '"total": 3,' in line and isinstance(json.loads(line)["money"], float)


def test_table_shows_integers_and_nulls_as_they_are(capsys):
    from embedlake.tasks.render import write_result

    write_result(_result("SELECT * FROM (VALUES (320, 'a'), (NULL, NULL)) t(width, name)"), "table")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines] == [
        ["width", "name"],
        ["320", "a"],
        ["NULL", "NULL"],
        ["(2", "rows)"],
    ]


def test_csv_writes_nested_columns_as_json_text(tmp_path):
    import csv

    from embedlake.tasks.render import write_result

    table = _result(
        "SELECT ['b.jpg', 'a.jpg'] AS paths, {'w': 3, 'h': NULL} AS size, "
        "MAP {'k': 1} AS m, [0.5, 1]::FLOAT[2] AS vec, NULL::INT[] AS none, 7 AS n"
    )
    out = tmp_path / "out.csv"
    write_result(table, "csv", str(out))
    (row,) = csv.DictReader(out.open())
    assert json.loads(row["paths"]) == ["b.jpg", "a.jpg"]
    assert json.loads(row["size"]) == {"w": 3, "h": None}
    assert json.loads(row["m"]) == {"k": 1} and json.loads(row["vec"]) == [0.5, 1.0]
    assert row["none"] == "" and row["n"] == "7"


def test_binary_columns_are_hex_in_every_text_format(capsys):
    import pyarrow as pa

    from embedlake.tasks.render import write_result

    table = pa.table({"path_bytes": pa.array([b"caf\xe9.jpg", None], pa.binary())})
    for fmt in ("csv", "json", "table"):
        write_result(table, fmt)
        assert "636166e92e6a7067" in capsys.readouterr().out, fmt


def test_csv_guards_text_a_spreadsheet_would_run_as_a_formula(tmp_path):
    import csv

    from embedlake.tasks.render import write_result

    table = _result(
        "SELECT * FROM (VALUES ('=HYPERLINK(\"http://x\")', -3, '+1'), ('plain', 4, 'a=b'),"
        " ('@SUM(A1)', 5, '-x')) AS t(\"=name\", n, other)"
    )
    out = tmp_path / "out.csv"
    write_result(table, "csv", str(out))
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["'=name", "n", "other"]  # a header is lake text too
    assert rows[1:] == [
        ['\'=HYPERLINK("http://x")', "-3", "'+1"],  # numbers stay numbers
        ["plain", "4", "a=b"],
        ["'@SUM(A1)", "5", "'-x"],
    ]
    write_result(table, "json", str(tmp_path / "out.json"))  # json keeps text exactly
    assert json.loads((tmp_path / "out.json").read_text().splitlines()[0])["=name"].startswith("=")
