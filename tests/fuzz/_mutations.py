"""Byte-level mutations of real files for the fuzz targets: flipped bytes, truncation, huge
declared lengths, repeated chunks and zeroed runs, chosen by hypothesis (so a failure
shrinks to a small reproducer and replays from the example database)."""

from __future__ import annotations

import os

from hypothesis import strategies as st

BIG_LENGTHS = (b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xfe\xff\xff\xff")


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        where = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "truncate", "length", "repeat", "zero", "byte"]))
        if kind == "flip":
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[where] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[where:]
        elif kind == "length":
            data[where : where + 4] = draw(st.sampled_from(BIG_LENGTHS))
        elif kind == "repeat":
            size = draw(st.integers(1, 64))
            data[where:where] = data[where : where + size] * draw(st.integers(2, 50))
        else:
            size = draw(st.integers(1, 256))
            data[where : where + size] = bytes(min(size, len(data) - where))
    return bytes(data)


def examples(default: int) -> int:
    """The CI budget, or a long run's (MEDSIGHT_FUZZ_EXAMPLES=100000)."""
    return int(os.environ.get("MEDSIGHT_FUZZ_EXAMPLES", default))


def time_limit(default: int) -> int:
    """pytest-timeout seconds for a fuzz target: the CI bound, none for a long run."""
    return 0 if "MEDSIGHT_FUZZ_EXAMPLES" in os.environ else default
