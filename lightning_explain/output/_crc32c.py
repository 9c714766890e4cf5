"""CRC-32C (Castagnoli) in numpy, for TensorBoard's event records.

TensorBoard's record writer (``tensorboard.summary.writer.record_writer``) checksums every record with a pure-Python
CRC-32C: about 0.25 s per MB, more than encoding the PNG of an image grid. This module computes the same checksum
with the data split into chunks whose CRCs run side by side in numpy, then joined with the "append zeros" operator of
the CRC (a 32 x 32 matrix over GF(2), as zlib's ``crc32_combine`` does): about 20x faster on a 2 MB record.
:func:`speed_up_tensorboard` installs it in TensorBoard's record writer; the bytes written are identical (tested
against TensorBoard's own function).

Example:
    >>> hex(crc32c(b"123456789"))  # the standard check value of CRC-32C
    '0xe3069283'
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["crc32c", "masked_crc32c", "speed_up_tensorboard"]

_POLY = 0x82F63B78  # CRC-32C, reflected
_CHUNK = 1024  # bytes per chunk of the vectorised pass


def _table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ (_POLY if crc & 1 else 0)
        table[i] = crc
    return table


_TABLE = _table()
_TABLE_LIST = [int(v) for v in _TABLE]


def _gf2_apply(matrix: list[int], vector: int) -> int:
    out, i = 0, 0
    while vector:
        if vector & 1:
            out ^= matrix[i]
        vector >>= 1
        i += 1
    return out


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_apply(matrix, column) for column in matrix]


@functools.lru_cache(maxsize=4)
def _shift_tables(length: int) -> tuple[tuple[int, ...], ...]:
    """Lookup tables of the operator "feed ``length`` zero bytes" on a raw CRC register, one per register byte."""
    # One zero bit: shift right, xor the polynomial when the low bit was set.
    operator = [_POLY] + [1 << (i - 1) for i in range(1, 32)]
    result: list[int] | None = None
    bits = length * 8
    while bits:
        if bits & 1:
            result = operator if result is None else [_gf2_apply(operator, c) for c in result]
        bits >>= 1
        if bits:
            operator = _gf2_square(operator)
    assert result is not None
    return tuple(tuple(_gf2_apply(result, v << (8 * k)) for v in range(256)) for k in range(4))


def _raw_update(register: int, data: bytes) -> int:
    table = _TABLE_LIST
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data`` (initial value and final xor 0xFFFFFFFF), as TensorBoard and TFRecord use it."""
    data = bytes(data)
    chunks = len(data) // _CHUNK
    if chunks < 4:
        return _raw_update(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    block = np.frombuffer(data, dtype=np.uint8, count=chunks * _CHUNK).reshape(chunks, _CHUNK)
    registers = np.zeros(chunks, dtype=np.uint32)
    registers[0] = 0xFFFFFFFF  # the initial value only enters through the first chunk
    for column in block.T:
        registers = _TABLE[(registers ^ column) & 0xFF] ^ (registers >> 8)
    s0, s1, s2, s3 = _shift_tables(_CHUNK)
    register = 0
    for value in registers.tolist():  # register <- shift(register, one chunk) xor the next chunk's own CRC
        register = s0[register & 0xFF] ^ s1[(register >> 8) & 0xFF] ^ s2[(register >> 16) & 0xFF] ^ s3[register >> 24]
        register ^= value
    return _raw_update(register, data[chunks * _CHUNK :]) ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C (what TensorBoard's ``masked_crc32c`` returns)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def speed_up_tensorboard() -> bool:
    """Give TensorBoard's record writer this checksum (same values, ~20x faster on large records). Idempotent;
    False if TensorBoard's writer is not there (then it is left alone)."""
    try:
        from tensorboard.summary.writer import record_writer
    except ImportError:
        return False
    if getattr(record_writer, "masked_crc32c", None) is not masked_crc32c:
        record_writer.masked_crc32c = masked_crc32c
    return True
