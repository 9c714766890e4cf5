"""Benchmark: what the opt-in vectorised CRC-32C (``LIGHTNING_EXPLAIN_FAST_CRC=1``) buys when images are written.

TensorBoard's record writer checksums every record with a pure-Python CRC-32C. With the opt-in, this package replaces
that function for the process by an identical vectorised one (``lightning_explain/_crc32c.py``). Measured here:

1. the checksum alone, TensorBoard's and ours, on PNG records of image grids the size ExplainCallback writes
   (16 probe rows x 4 cells of 128 px, uniform noise, which PNG cannot compress: the worst case; and a smooth grid);
2. the whole write of those grids through a real ``SummaryWriter`` (``add_summary`` of the encoded PNG, then
   ``flush``: the checksum runs in TensorBoard's own writer thread), by default and opted in.

Each line prints the ratio against TensorBoard's own function measured in the same run. No timing is asserted.

Run::

    .venv/bin/python benchmarks/bench_crc.py            # 5 rounds
    .venv/bin/python benchmarks/bench_crc.py --rounds 9
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer import record_writer
from torch.utils.tensorboard import SummaryWriter

from lightning_explain.output._crc32c import masked_crc32c, speed_up_tensorboard
from lightning_explain.output.sinks import encode_png


def grids() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (3, 16 * 128, 4 * 128), generator=g, dtype=torch.uint8)
    ramp = torch.linspace(0, 255, 4 * 128).expand(3, 16 * 128, 4 * 128).to(torch.uint8)
    return {"noise": noise, "smooth": ramp}


def record(image: torch.Tensor) -> bytes:
    png = Summary.Image(
        height=image.shape[1], width=image.shape[2], colorspace=3, encoded_image_string=encode_png(image)
    )
    return Summary(value=[Summary.Value(tag="explain/gradcam", image=png)]).SerializeToString()


def median_seconds(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_all(images: list[torch.Tensor]) -> None:
    with tempfile.TemporaryDirectory() as root:
        writer = SummaryWriter(root)
        for step, image in enumerate(images):
            png = Summary.Image(
                height=image.shape[1], width=image.shape[2], colorspace=3, encoded_image_string=encode_png(image)
            )
            writer.file_writer.add_summary(Summary(value=[Summary.Value(tag="grid", image=png)]), step)
        writer.flush()
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tensorboards = record_writer.masked_crc32c
    print("1. the checksum of one record (median of", args.rounds, "rounds)")
    for name, image in grids().items():
        data = record(image)
        theirs = median_seconds(lambda data=data: tensorboards(data), args.rounds)
        ours = median_seconds(lambda data=data: masked_crc32c(data), args.rounds)
        assert tensorboards(data) == masked_crc32c(data)
        print(
            f"  {name} grid, {len(data) / 1e6:.2f} MB record: TensorBoard {theirs * 1e3:.1f} ms, "
            f"ours {ours * 1e3:.1f} ms, {theirs / ours:.1f}x faster"
        )
    images = [grids()["noise"]] * 3
    print("\n2. encode + write + flush 3 noise grids through a SummaryWriter")
    default = median_seconds(lambda: write_all(images), args.rounds)
    speed_up_tensorboard()
    try:
        opted = median_seconds(lambda: write_all(images), args.rounds)
    finally:
        record_writer.masked_crc32c = tensorboards
    print(f"  default {default:.3f} s, LIGHTNING_EXPLAIN_FAST_CRC=1 {opted:.3f} s, {default / opted:.2f}x faster")


if __name__ == "__main__":
    main()
