"""SharedPicture: the endoscope thumbnail crosses processes without either side waiting, and reaches
an OpenIGTLink client as IMAGE through the server's picture_source."""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pyigtl

from telesurg.interop.igtl import IgtlConfig, IgtlServer
from telesurg.interop.shared_picture import _HEADER, SharedPicture


def _writer(name: str, stop, seconds: float) -> None:
    """Child process: a 30 fps source of 640x360 pictures whose pixels all equal the frame number."""
    slot = SharedPicture.attach(name)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end and not stop.is_set():
        n = (n + 1) % 256
        slot.write(np.full((360, 640, 3), n, dtype=np.uint8), time.monotonic())
        time.sleep(1 / 30)
    slot.close()


def test_write_read_decimate_and_skip_unchanged_or_torn() -> None:
    slot = SharedPicture.create(max_width=320, max_height=240)
    reader = SharedPicture.attach(slot.name)
    try:
        assert reader.read() is None  # nothing written yet
        picture = np.random.default_rng(2).integers(0, 255, size=(360, 640, 3), dtype=np.uint8)
        slot.write(picture, 12.5)
        got = reader.read()
        assert got is not None
        np.testing.assert_array_equal(got[0], picture[::2, ::2])
        assert got[1] == 12.5
        assert reader.read() is None  # not newer than the last read
        grey = np.arange(100 * 1000, dtype=np.uint32).reshape(1000, 100).astype(np.uint8)  # tall: height decimated
        slot.write(grey, 13.0)
        got = reader.read()
        assert got is not None and got[0].shape == (200, 20)
        np.testing.assert_array_equal(got[0], grey[::5, ::5])
        _HEADER.pack_into(slot._shm.buf, 0, 7, 0, 0, 0, 0.0)  # odd sequence: a write in progress
        assert reader.read() is None
    finally:
        reader.close()
        slot.close()


def test_a_picture_written_by_another_process_reaches_an_igtl_client() -> None:
    slot = SharedPicture.create()
    reader = SharedPicture.attach(slot.name)
    context = mp.get_context("spawn")
    stop = context.Event()
    writer = context.Process(target=_writer, args=(slot.name, stop, 20.0))
    writer.start()
    server = IgtlServer(("127.0.0.1", 0), IgtlConfig(pose_hz=30.0, image_hz=4.0), picture_source=reader.read)
    server.start()
    client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=server.address[1])
    try:
        image = client.wait_for_message("Endoscope", timeout=8)
        later = client.wait_for_message("Endoscope", timeout=8)
    finally:
        stop.set()
        client.stop()
        server.stop()
        writer.join(10)
        reader.close()
        slot.close()
    assert image is not None and later is not None
    assert image.image.shape == (1, 180, 320, 3)
    assert len(np.unique(image.image)) == 1  # one whole frame, never half of two (the seqlock)
    assert int(later.image[0, 0, 0, 0]) != int(image.image[0, 0, 0, 0])  # newer pictures follow
    assert server.stats()["images"] >= 2 and server.error is None
