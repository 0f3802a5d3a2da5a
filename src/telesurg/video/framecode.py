"""A frame number drawn into the picture as large black/white blocks, readable after lossy H.264.

Why: the packet header says which frame the receiver *should* be showing; only the pixels prove which
frame it *is* showing. Reading the code back after decode catches frozen, repeated, buffered or
mis-ordered frames, and makes the capture→decoded latency honest.

Layout: a strip across the top of the picture, 2 rows x 16 blocks = 32 bits: a 24-bit frame number
(mod 2**24: 77 h at 60 fps) then an 8-bit check (low byte of CRC-32 of the number). Blocks are at least
16 pixels high and width/16 wide, i.e. whole macroblocks or more, and only their inner half is sampled,
so quantisation and deblocking at the edges do not flip bits. A block whose mean is near mid-grey
makes the code unreadable (None) rather than silently wrong.
"""

from __future__ import annotations

import zlib

import numpy as np

BLOCKS_PER_ROW = 16
ROWS = 2
NUMBER_BITS = 24
CHECK_BITS = 8
WHITE, BLACK = 235, 16  # limited-range luma, what a yuv420p encoder expects
_UNSURE_LOW, _UNSURE_HIGH = 96, 160  # block means between these are "cannot tell"


def block_size(width: int, height: int) -> tuple[int, int]:
    """(block width, block height) in pixels for a picture of this size."""
    if width < 2 * BLOCKS_PER_ROW or height < 4 * ROWS * 8:
        raise ValueError(f"picture {width}x{height} too small for a frame code (min 32x64)")
    bh = max(16, (height // 45) // 2 * 2)
    return width // BLOCKS_PER_ROW, bh


def strip_height(width: int, height: int) -> int:
    return ROWS * block_size(width, height)[1]


def _check(number: int) -> int:
    return zlib.crc32(number.to_bytes(3, "big")) & 0xFF


def _bits(frame_number: int) -> np.ndarray:
    number = frame_number % (1 << NUMBER_BITS)
    word = (number << CHECK_BITS) | _check(number)
    total = NUMBER_BITS + CHECK_BITS
    return np.array([(word >> (total - 1 - i)) & 1 for i in range(total)], dtype=bool)


def stamp_luma(luma: np.ndarray, frame_number: int) -> None:
    """Draw the code for `frame_number` into a Y plane (in place)."""
    h, w = luma.shape
    bw, bh = block_size(w, h)
    levels = np.where(_bits(frame_number), WHITE, BLACK).astype(np.uint8).reshape(ROWS, BLOCKS_PER_ROW)
    strip = np.repeat(np.repeat(levels, bh, axis=0), bw, axis=1)
    luma[: ROWS * bh, : BLOCKS_PER_ROW * bw] = strip


def stamp_yuv420p(image: np.ndarray, frame_number: int) -> None:
    """Draw the code into a planar yuv420p array (in place); the strip's chroma is set to neutral grey."""
    w = image.shape[1]
    h = image.shape[0] * 2 // 3
    stamp_luma(image[:h], frame_number)
    bw, bh = block_size(w, h)
    rows, cols = ROWS * bh // 2, BLOCKS_PER_ROW * bw // 2
    quarter = (h // 2) * (w // 2)
    chroma = image[h:].reshape(-1)
    for plane in (0, 1):
        view = chroma[plane * quarter : (plane + 1) * quarter].reshape(h // 2, w // 2)
        view[:rows, :cols] = 128


def stamp_rgb(image: np.ndarray, frame_number: int) -> None:
    """Draw the code into an (H, W, 3) RGB array (in place) in pure black and white."""
    h, w = image.shape[:2]
    bw, bh = block_size(w, h)
    levels = np.where(_bits(frame_number), 255, 0).astype(np.uint8).reshape(ROWS, BLOCKS_PER_ROW)
    strip = np.repeat(np.repeat(levels, bh, axis=0), bw, axis=1)
    image[: ROWS * bh, : BLOCKS_PER_ROW * bw] = strip[..., None]


def read_luma(luma: np.ndarray) -> int | None:
    """The frame number (mod 2**24) coded in this Y plane, or None if absent, damaged or unsure."""
    h, w = luma.shape
    return read_strip(luma, w, h)


def read_strip(rows: np.ndarray, width: int, height: int) -> int | None:
    """Like `read_luma`, given only the top rows (>= `strip_height`) of a width x height Y plane."""
    try:
        bw, bh = block_size(width, height)
    except ValueError:
        return None
    if rows.shape[0] < ROWS * bh or rows.shape[1] < BLOCKS_PER_ROW * bw:
        return None
    strip = rows[: ROWS * bh, : BLOCKS_PER_ROW * bw].astype(np.float32)
    blocks = strip.reshape(ROWS, bh, BLOCKS_PER_ROW, bw)
    inner = blocks[:, bh // 4 : bh - bh // 4, :, bw // 4 : bw - bw // 4]
    means = inner.mean(axis=(1, 3)).reshape(-1)
    if np.any((means > _UNSURE_LOW) & (means < _UNSURE_HIGH)):
        return None
    word = 0
    for bit in means >= 128:
        word = (word << 1) | int(bit)
    number, check = word >> CHECK_BITS, word & 0xFF
    return number if _check(number) == check else None


def same_frame(read_number: int | None, frame_number: int) -> bool:
    """True when a code read from pixels matches a full frame number (codes wrap at 2**24)."""
    return read_number is not None and read_number == frame_number % (1 << NUMBER_BITS)
