"""The image size a compressed frame declares in its own codestream, read before decoding.

A decoder allocates what the codestream says, not what the DICOM header says: a 16 x 16 image
whose JPEG frame declares 65,000 x 65,000 pixels makes libjpeg ask for gigabytes. Reading the
frame header first (JPEG and JPEG-LS SOF segment, JPEG 2000 SIZ marker) lets the reader refuse
such a frame by the resource limits. pydicom has a parser for JPEG but it is private and
returns nothing for JPEG 2000 sizes, hence these few lines.
"""

from __future__ import annotations

import struct

__all__ = ["declared_size"]

_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
)
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn carry no length


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    offset = 2
    while offset + 9 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _STANDALONE:
            offset += 2
            continue
        if marker in _SOF_MARKERS:
            rows, columns = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return rows, columns
        if marker == 0xDA:  # start of scan before any frame header
            return None
        offset += 2 + struct.unpack(">H", data[offset + 2 : offset + 4])[0]
    return None


def _j2k_size(data: bytes) -> tuple[int, int] | None:
    offset = 0
    if data.startswith(b"\x00\x00\x00\x0cjP  "):  # a JP2 file: find the codestream box
        offset = 12
        while offset + 8 <= len(data):
            length = struct.unpack(">I", data[offset : offset + 4])[0]
            if data[offset + 4 : offset + 8] == b"jp2c":
                offset += 8
                break
            if length < 8:
                return None
            offset += length
    if data[offset : offset + 4] != b"\xff\x4f\xff\x51" or len(data) < offset + 24:
        return None
    width, height, x_origin, y_origin = struct.unpack(">IIII", data[offset + 8 : offset + 24])
    return max(0, height - y_origin), max(0, width - x_origin)


def declared_size(frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) a JPEG, JPEG-LS or JPEG 2000 frame declares; None when not one."""
    head = bytes(frame[:65536])  # headers sit at the start; markers past this are not read
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(head)
    return _j2k_size(head)
