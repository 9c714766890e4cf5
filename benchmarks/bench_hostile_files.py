"""Benchmark: peak memory while the dashboard's reader (and so ``lightning-explain report``) reads hostile event files.

Each case runs in a fresh process and prints the peak extra resident memory of one call (``_memory.py``), next to a
baseline measured in the same run:

1. indexing a 256 MiB event file (256 grid records of 1 MiB and a damaged scalar record in the middle), against
   reading the file whole (what the reader did before it read one record at a time);
2. indexing a file whose one grid record is 80 MiB (over the 64 MiB cap: skipped unread), against reading that
   record;
3. asking for a cell of a grid whose PNG header claims 12,000 x 12,000 pixels (refused from its header), against
   decoding it with PIL (under PIL's own bomb limit, so PIL decodes it).

No number is asserted; the tests check the behaviour (``tests/dashboard/test_hostile_files.py``).

Run::

    .venv/bin/python benchmarks/bench_hostile_files.py
"""

from __future__ import annotations

import io
import json
import struct
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, whatever is installed

from _memory import child_peak_mib, print_peak_extra_mib

from lightning_explain.output._crc32c import masked_crc32c

MIB = 2**20


def _record(payload: bytes) -> bytes:
    header = struct.pack("<Q", len(payload))
    return header + struct.pack("<I", masked_crc32c(header)) + payload + struct.pack("<I", masked_crc32c(payload))


def _event(step: int, value: object) -> bytes:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    return Event(step=step, summary=Summary(value=[value])).SerializeToString()


def _layout(step: int) -> bytes:
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto

    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
    text = json.dumps({"grids": {}, "epoch": step}).encode()
    value = Summary.Value(tag="explain/layout", metadata=meta, tensor=TensorProto(dtype=7, string_val=[text]))
    return _record(_event(step, value))


def _image(step: int, png: bytes) -> bytes:
    from tensorboard.compat.proto.summary_pb2 import Summary

    value = Summary.Value(tag="explain/gradcam", image=Summary.Image(height=1, width=1, encoded_image_string=png))
    return _record(_event(step, value))


def _bomb(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(b"", 9)) + chunk(b"IEND", b"")


def make(root: Path) -> None:
    """The three log dirs: ``big`` (256 MiB), ``huge`` (one 80 MiB record), ``bomb`` (a 12,000 px square claim)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    grid = _image(0, b"\x89PNG" + bytes(MIB))
    damaged = bytearray(_record(_event(0, Summary.Value(tag="epoch", simple_value=0.0))))
    damaged[-6] ^= 0xFF
    (root / "big" / "r").mkdir(parents=True)
    with open(root / "big" / "r" / "events.out.tfevents.1", "wb") as f:
        f.write(_layout(0))
        for i in range(256):
            f.write(grid)
            if i == 128:
                f.write(bytes(damaged))
    (root / "huge" / "r").mkdir(parents=True)
    (root / "huge" / "r" / "events.out.tfevents.1").write_bytes(_layout(0) + _image(0, bytes(80 * MIB)))
    (root / "bomb" / "r").mkdir(parents=True)
    (root / "bomb" / "r" / "events.out.tfevents.1").write_bytes(_layout(0) + _image(0, _bomb(12_000, 12_000)))


def child(case: str, root: str) -> None:
    from lightning_explain.dashboard.data import ApiError, Logdir

    warnings.simplefilter("ignore")
    path = Path(root)
    if case == "index-big":
        print_peak_extra_mib(lambda: Logdir(path / "big").runs())
    elif case == "whole-big":
        print_peak_extra_mib(lambda: (path / "big" / "r" / "events.out.tfevents.1").read_bytes())
    elif case == "index-huge":
        print_peak_extra_mib(lambda: Logdir(path / "huge").runs())
    elif case == "whole-huge":
        print_peak_extra_mib(lambda: (path / "huge" / "r" / "events.out.tfevents.1").read_bytes())
    elif case == "cell-bomb":

        def cell() -> None:
            try:
                Logdir(path / "bomb").cell("r", "explain/gradcam", "0", "0", "0")
            except ApiError as err:
                assert err.status == 422

        print_peak_extra_mib(cell)
    elif case == "pil-bomb":
        from PIL import Image, ImageFile

        ImageFile.LOAD_TRUNCATED_IMAGES = True  # the bomb's few bytes of data: PIL fills in the rest
        data = _bomb(12_000, 12_000)
        print_peak_extra_mib(lambda: Image.open(io.BytesIO(data)).convert("RGB"))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    with tempfile.TemporaryDirectory() as tmp:
        make(Path(tmp))
        print("| case | the reader (MiB) | baseline (MiB) | baseline |")
        print("|---|---:|---:|---|")
        for label, ours, base, what in (
            ("256 MiB file, a damaged record inside", "index-big", "whole-big", "the file read whole"),
            ("one 80 MiB record (cap 64 MiB)", "index-huge", "whole-huge", "the file read whole"),
            ("PNG claiming 12,000 x 12,000 px", "cell-bomb", "pil-bomb", "PIL decodes it"),
        ):
            a = child_peak_mib([__file__, "--child", ours, tmp], ours)
            b = child_peak_mib([__file__, "--child", base, tmp], base)
            fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
            print(f"| {label} | {fmt(a)} | {fmt(b)} | {what} |")


if __name__ == "__main__":
    main()
