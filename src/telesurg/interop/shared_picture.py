"""`SharedPicture`: the latest small endoscope picture, from the video process to the robot process.

The robot site renders and encodes the endoscope in a child process (apps/robot_video.py); the
OpenIGTLink server lives in the robot process and wants an uncompressed thumbnail twice a second.
Decoding the H.264 stream back in the robot process would cost far more than sharing one small
picture, so the child writes a decimated copy of the left eye into shared memory and the server's
thread reads it when it is due. Neither side ever waits: a sequence counter (a seqlock) is odd while
the writer copies, and a reader that sees it odd or changed during its copy just skips that read.
"""

from __future__ import annotations

import struct
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from telesurg.interop.igtl_core import decimate

_HEADER = struct.Struct("=QHHBxxxd")  # sequence, height, width, channels, monotonic capture time
_OFFSET = 32  # pixels start here (header padded)


class SharedPicture:
    """One writer process, any number of readers; see the module docstring."""

    def __init__(self, shm: SharedMemory, max_width: int, max_height: int, owner: bool) -> None:
        self._shm = shm
        self.max_width, self.max_height = max_width, max_height
        self._owner = owner
        self._seq = 0
        self._last_read = 0

    @classmethod
    def create(cls, max_width: int = 320, max_height: int = 240) -> SharedPicture:
        """A new slot for pictures up to max_width x max_height RGB (bigger ones are decimated)."""
        shm = SharedMemory(create=True, size=_OFFSET + max_width * max_height * 3)
        shm.buf[:_OFFSET] = bytes(_OFFSET)
        return cls(shm, max_width, max_height, owner=True)

    @classmethod
    def attach(cls, name: str, max_width: int = 320, max_height: int = 240) -> SharedPicture:
        return cls(SharedMemory(name=name), max_width, max_height, owner=False)

    @property
    def name(self) -> str:
        return self._shm.name

    def write(self, image: np.ndarray, t_mono: float) -> None:
        """Store an HxWx3 RGB or HxW grey picture (uint8), decimated to fit the slot."""
        picture = decimate(np.asarray(image, dtype=np.uint8), self.max_width)
        if picture.shape[0] > self.max_height:
            picture = decimate(picture.swapaxes(0, 1), self.max_height).swapaxes(0, 1)
        height, width = picture.shape[:2]
        channels = 1 if picture.ndim == 2 else picture.shape[2]
        buf = self._shm.buf
        self._seq += 1  # odd: writing
        _HEADER.pack_into(buf, 0, self._seq, 0, 0, 0, 0.0)
        pixels = np.ndarray((height, width, channels), dtype=np.uint8, buffer=buf, offset=_OFFSET)
        pixels[...] = picture.reshape(height, width, channels)
        self._seq += 1  # even: complete
        _HEADER.pack_into(buf, 0, self._seq, height, width, channels, t_mono)

    def read(self) -> tuple[np.ndarray, float] | None:
        """(picture, capture time) if a complete picture newer than the last one read is there, else None."""
        buf = self._shm.buf
        seq, height, width, channels, t_mono = _HEADER.unpack_from(buf, 0)
        if seq == 0 or seq % 2 or seq == self._last_read:
            return None
        pixels = np.ndarray((height, width, channels), dtype=np.uint8, buffer=buf, offset=_OFFSET).copy()
        if _HEADER.unpack_from(buf, 0)[0] != seq:  # overwritten while we copied: torn, skip it
            return None
        self._last_read = seq
        return (pixels[:, :, 0] if channels == 1 else pixels), t_mono

    def close(self) -> None:
        self._shm.close()
        if self._owner:
            self._shm.unlink()
