"""Event files from someone else, given to the dashboard (``Logdir``) and to ``lightning-explain report``: a record
with a wrong checksum, a damaged length, an oversized record, a PNG that claims 100,000 x 100,000 pixels, tag names
with path separators or control characters. Each is skipped with a warning or answered with a message; reading holds
one record in memory at a time; the report writes its one file and nothing else."""

from __future__ import annotations

import io
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.summary.writer.record_writer import RecordWriter

from lightning_explain.dashboard import data as dashboard_data
from lightning_explain.dashboard.data import ApiError, Logdir
from lightning_explain.report import write_report
from lightning_explain.tools.cli import main as cli

EPOCHS = 3


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb(width: int, height: int) -> bytes:
    """A well-formed PNG whose header claims ``width x height`` RGB pixels; its data (a few compressed rows of zeros)
    is tiny."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    rows = zlib.compress(b"\0" * (1 + 3 * width) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def _text(tag: str, text: str) -> Summary.Value:
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
    tensor = TensorProto(dtype=7, string_val=[text.encode()])  # DT_STRING
    return Summary.Value(tag=tag, metadata=meta, tensor=tensor)


def _image(tag: str, png: bytes) -> Summary.Value:
    return Summary.Value(tag=tag, image=Summary.Image(height=8, width=8, colorspace=3, encoded_image_string=png))


def write_run(folder: Path, pngs: dict[int, bytes] | None = None, tags: tuple[str, ...] = ("explain/gradcam",)) -> Path:
    """A run as ExplainCallback logs it (per epoch: a layout text, then one grid per tag, then an ``epoch`` scalar),
    written record by record with TensorBoard's own RecordWriter; ``pngs`` replaces the grid of some epochs."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "events.out.tfevents.1.host.1.0"
    with open(path, "wb") as f:
        records = RecordWriter(f)
        records.write(Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString())
        for epoch in range(EPOCHS):
            step = 10 * epoch + 9
            layout = json.dumps({"grids": {}, "epoch": epoch})
            text = Summary(value=[_text("explain/layout", layout)])
            records.write(Event(step=step, summary=text).SerializeToString())
            for tag in tags:
                noise = np.random.default_rng(epoch).integers(0, 256, (48, 48, 3), dtype=np.uint8)
                png = (pngs or {}).get(epoch) or _png(noise)  # about 7 kB: over CHECK_AT_INDEX_BYTES
                records.write(Event(step=step, summary=Summary(value=[_image(tag, png)])).SerializeToString())
            scalar = Summary(value=[Summary.Value(tag="epoch", simple_value=float(epoch))])
            records.write(Event(step=step, summary=scalar).SerializeToString())
    return path


def spans(path: Path) -> list[tuple[int, int, Event]]:
    data, out, pos = path.read_bytes(), [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append((pos, pos + 16 + length, Event.FromString(data[pos + 12 : pos + 12 + length])))
        pos += 16 + length
    return out


def _epochs(logdir: Logdir, run: str = "r", tag: str = "explain/gradcam") -> list[int]:
    view = next(v for v in logdir.run(run)["views"] if v["tag"] == tag)
    return [e for e, _ in view["frames"]]


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(dashboard_data, "_warned_damage", set())


def test_a_small_record_with_a_wrong_checksum_is_skipped_with_a_warning(tmp_path):
    path = write_run(tmp_path / "r")
    start, end, _ = next(s for s in spans(path) if s[2].step == 19 and s[2].summary.value[0].tag == "epoch")
    _flip(path, end - 6)  # a byte of the payload of epoch 1's "epoch" scalar
    with pytest.warns(UserWarning, match=rf"byte {start}: a record fails its checksum and is skipped"):
        logdir = Logdir(tmp_path, rescan_seconds=0)
        assert _epochs(logdir) == [0, 1, 2]  # the layout still names epoch 1
    assert sorted(logdir._runs["r"].scalars["epoch"]) == [9, 29]


def test_a_grid_with_a_wrong_checksum_is_a_422_and_left_out_of_the_report(tmp_path):
    path = write_run(tmp_path / "r")
    _, end, _ = next(s for s in spans(path) if s[2].step == 9 and s[2].summary.value[0].HasField("image"))
    _flip(path, end - 10)  # inside epoch 0's PNG (a large record: checked when read to be served)
    logdir = Logdir(tmp_path, rescan_seconds=0)
    assert _epochs(logdir) == [0, 1, 2]
    with pytest.raises(ApiError, match="fails its checksum") as err:
        logdir.cell("r", "explain/gradcam", "9", "0", "0")
    assert err.value.status == 422
    assert logdir.cell("r", "explain/gradcam", "19", "0", "0").startswith(b"\x89PNG")
    with pytest.warns(UserWarning, match="leaves out the grid 'explain/gradcam' of run 'r' at step 9"):
        page = write_report(tmp_path, tmp_path / "out" / "report.html", quiet=True).read_text()
    assert "tile?run=r&tag=explain/gradcam&step=19&part=maps" in page  # epoch 1's column is in the page ...
    assert "tile?run=r&tag=explain/gradcam&step=9&part=maps" not in page  # ... epoch 0's is left out (shown empty)


def test_a_damaged_length_ends_the_file_where_it_is_with_a_warning(tmp_path):
    path = write_run(tmp_path / "r")
    start = next(s[0] for s in spans(path) if s[2].step == 19)
    _flip(path, start + 3)  # the first record of epoch 1: its length no longer matches its checksum
    with pytest.warns(UserWarning, match=rf"byte {start}: a record's length fails its checksum; the rest"):
        logdir = Logdir(tmp_path, rescan_seconds=0)
        assert _epochs(logdir) == [0]
    assert logdir.cell("r", "explain/gradcam", "9", "0", "0").startswith(b"\x89PNG")


def test_records_longer_than_the_bound_are_skipped_unread(tmp_path, monkeypatch):
    """A record longer than MAX_RECORD_BYTES is skipped without reading it; one that claims more bytes than the file
    has is an incomplete tail (nothing read, no allocation)."""
    large = _png(np.random.default_rng(9).integers(0, 256, (96, 96, 3), dtype=np.uint8))
    path = write_run(tmp_path / "r", pngs={1: large})  # epoch 1's grid is 4x the others
    image_record = next(s for s in spans(path) if s[2].step == 19 and s[2].summary.value[0].HasField("image"))
    monkeypatch.setattr(dashboard_data, "MAX_RECORD_BYTES", image_record[1] - image_record[0] - 17)
    reads: list[int] = []
    real_open = open

    class Counting(io.BufferedReader):
        def read(self, n: int | None = -1) -> bytes:
            reads.append(-1 if n is None else n)
            return super().read(n)

    def counting_open(file, mode="r", *args, **kwargs):
        if mode == "rb" and "tfevents" in str(file):
            return Counting(real_open(file, "rb", buffering=0))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    with pytest.warns(UserWarning, match=rf"byte {image_record[0]}: a record of \d+ bytes \(more than"):
        logdir = Logdir(tmp_path, rescan_seconds=0)
        views = logdir.run("r")["views"]
    assert max(reads) <= dashboard_data.MAX_RECORD_BYTES + 4 and -1 not in reads
    assert [s for _, s in views[0]["frames"]] == [9, 29]  # epoch 1's grid (too long) left out
    with real_open(path, "ab") as f:  # a last record that claims 2**40 bytes
        header = struct.pack("<Q", 2**40)
        from lightning_explain.output._crc32c import masked_crc32c

        f.write(header + struct.pack("<I", masked_crc32c(header)) + b"x" * 100)
    reads.clear()
    logdir.refresh(force=True)
    assert max(reads, default=0) <= 12


@pytest.mark.parametrize("size", [(100_000, 100_000), (12_000, 12_000)], ids=["100k-square", "under-pil-limit"])
def test_a_png_bomb_is_refused_from_its_header_before_decoding(tmp_path, size):
    """100,000 x 100,000 pixels (30 GB as RGB); 12,000 x 12,000 is under PIL's own bomb error (it would decode 432
    MB). Both are refused from the IHDR, before PIL allocates anything; the report leaves the grid out."""
    write_run(tmp_path / "r", pngs={1: bomb(*size)})
    logdir = Logdir(tmp_path, rescan_seconds=0)
    with pytest.raises(ApiError, match=rf"claims {size[0]} x {size[1]} pixels, more than {2**25}") as err:
        logdir.cell("r", "explain/gradcam", "19", "0", "0")
    assert err.value.status == 422
    with pytest.warns(UserWarning, match="leaves out the grid .* at step 19: a logged image claims"):
        assert write_report(tmp_path, tmp_path / "report.html", quiet=True).is_file()


def test_a_logged_image_that_is_no_png_or_is_cut_is_a_422(tmp_path):
    png = _png(np.zeros((8, 8, 3), np.uint8))
    write_run(tmp_path / "r", pngs={0: b"GIF89a" + png[6:], 1: png[: len(png) // 2]})
    logdir = Logdir(tmp_path, rescan_seconds=0)
    with pytest.raises(ApiError, match="not a PNG"):
        logdir.cell("r", "explain/gradcam", "9", "0", "0")
    with pytest.raises(ApiError, match="cannot be decoded"):
        logdir.cell("r", "explain/gradcam", "19", "0", "0")


HOSTILE_TAGS = (
    "explain/../../x",
    "explain/a/../../b",
    "explain/</script><script>window.pwned=1</script>",
    "explain/\x00nul",
    "explain/new\nline",
    "explain/" + "long" * 2000,
)


def test_tag_names_never_leave_the_output_path_and_odd_ones_are_skipped(tmp_path):
    logs = tmp_path / "deep" / "logs"
    write_run(logs / "r", tags=HOSTILE_TAGS)
    before = sorted(p for p in tmp_path.rglob("*"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logdir = Logdir(logs, rescan_seconds=0)
        served = sorted(v["tag"] for v in logdir.run("r")["views"])
        code = cli(["report", str(logs), "-o", str(logs / "out" / "report.html"), "-q"])
    assert code == 0
    assert served == sorted(HOSTILE_TAGS[:3])  # names only, never paths
    skipped = [str(w.message) for w in caught if "is skipped: tags must have at most 512" in str(w.message)]
    assert len(skipped) == 3, skipped  # NUL, newline, 8,008 characters (once each)
    after = sorted(p for p in tmp_path.rglob("*"))
    assert sorted(set(after) - set(before)) == [logs / "out", logs / "out" / "report.html"]
    page = (logs / "out" / "report.html").read_text()
    assert "window.pwned" in page and "<script>window.pwned" not in page and "</script><script>" not in page
    assert "\x00" not in page


def test_a_layout_with_empty_or_negative_cells_is_ignored():
    # A layout claiming 10 million rows of zero-pixel cells "fitted" a 1 x 1 grid: cutting its column looped for
    # minutes over gigabytes. Cells of at least one pixel bound the rows and columns by the grid's own size.
    run = dashboard_data.RunIndex("unused", "r")
    hostile = {"rows": 10**7, "columns": 2, "cell_height": 0, "cell_width": -1, "band": -1, "pad": 1}
    run.layouts[9] = {"grids": {"explain/gradcam": hostile}}
    assert run.grid_layout("explain/gradcam", 9) is None  # the grid is then served whole
    fine = {"rows": 1, "columns": 2, "cell_height": 16, "cell_width": 16, "band": 0, "pad": 2}
    run.layouts[9] = {"grids": {"explain/gradcam": fine}}
    assert run.grid_layout("explain/gradcam", 9) is not None
