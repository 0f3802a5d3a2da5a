"""OpenIGTLink server: pose -> matrix, real pyigtl clients over loopback TCP, rate limits, read-only."""

from __future__ import annotations

import math
import socket
import threading
import time

import numpy as np
import pyigtl
import pytest
from pyigtl.messages import MessageBase
from scipy.spatial.transform import Rotation

from telesurg.interop.igtl import IgtlAddressError, IgtlConfig, IgtlServer, parse_listen_address, start_igtl
from telesurg.interop.igtl_core import IgtlInbound, IgtlProtocolError, IgtlPublisher, pose_matrix_mm
from telesurg.messages import ArmId, ArmTelemetry, Telemetry

QUARTER_TURN_Z = (math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4))


def telemetry(t: float, psm1=(0.01, -0.02, 0.03), psm2=(-0.015, 0.005, 0.06), q1=QUARTER_TURN_Z,
              q2=(0.5, 0.5, 0.5, 0.5)) -> Telemetry:
    return Telemetry(t, 0, (ArmTelemetry(ArmId.PSM1, 1, 3, 7, psm1, q1, 0.2),
                            ArmTelemetry(ArmId.PSM2, 1, 3, 9, psm2, q2, 0.0)))


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


@pytest.fixture
def client_factory():
    clients: list[pyigtl.OpenIGTLinkClient] = []

    def make(server: IgtlServer) -> pyigtl.OpenIGTLinkClient:
        before = server.counters["connections"]
        client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=server.address[1])
        clients.append(client)
        wait_until(lambda: server.counters["connections"] > before)
        return client

    yield make
    for client in clients:
        client.stop()


# -- pose conversion -------------------------------------------------------------------------------
def test_pose_matrix_known_rotations_and_millimetres() -> None:
    m = pose_matrix_mm((0.01, -0.02, 0.03), QUARTER_TURN_Z)  # 90 degrees about z: x -> y, y -> -x
    np.testing.assert_allclose(m, [[0, -1, 0, 10], [1, 0, 0, -20], [0, 0, 1, 30], [0, 0, 0, 1]], atol=1e-12)
    m = pose_matrix_mm((0.0, 0.0, 0.0), (0.5, 0.5, 0.5, 0.5))  # 120 degrees about (1,1,1): x -> y -> z -> x
    np.testing.assert_allclose(m[:3, :3] @ np.eye(3), [[0, 0, 1], [1, 0, 0], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(pose_matrix_mm((0, 0, 0), (2.0, 0, 0, 0)), np.eye(4))  # normalised first


def test_pose_matrix_agrees_with_scipy() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        expected = Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()  # scipy orders (x, y, z, w)
        np.testing.assert_allclose(pose_matrix_mm(np.zeros(3), q)[:3, :3], expected, atol=1e-12)


def test_pose_matrix_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="quaternion"):
        pose_matrix_mm((0, 0, 0), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="position"):
        pose_matrix_mm((0, math.nan, 0), (1, 0, 0, 0))


# -- sans-I/O core ---------------------------------------------------------------------------------
def test_publisher_sends_each_new_sample_once_at_most_at_the_rate() -> None:
    pub = IgtlPublisher(IgtlConfig(pose_hz=10.0, image_hz=0.0))
    assert pub.due(0.0) == []  # nothing offered yet
    pub.offer_telemetry(telemetry(0.0))
    assert len(pub.due(0.01)) == 0  # the empty deadline moved one period on (0.1)
    assert len(pub.due(0.1)) == 2  # PSM1 and PSM2
    pub.offer_telemetry(telemetry(0.15))
    assert pub.due(0.15) == []  # too soon: the next deadline is 0.2
    assert len(pub.due(0.2)) == 2
    assert pub.due(0.3) == []  # nothing new since
    bad = Telemetry(0.31, 0, (ArmTelemetry(0, 1, 3, 1, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0), 0.0),))
    pub.offer_telemetry(bad)
    assert pub.due(0.4) == [] and pub.counts["bad_pose"] == 1


def test_inbound_counts_messages_split_anywhere_and_refuses_garbage() -> None:
    stream = (pyigtl.TransformMessage(np.eye(4), device_name="PSM1").pack()
              + pyigtl.StringMessage("home", device_name="CMD").pack()) * 3
    inbound = IgtlInbound()
    for i in range(0, len(stream), 7):  # TCP may split anywhere
        inbound.feed(stream[i:i + 7])
    assert inbound.counts == {"TRANSFORM": 3, "STRING": 3}
    with pytest.raises(IgtlProtocolError, match="not an OpenIGTLink header"):
        IgtlInbound().feed(b"GET / HTTP/1.1\r\nHost: robot\r\n\r\n" + b"\xff" * 40)
    huge = bytearray(pyigtl.StringMessage("x", device_name="X").pack()[:MessageBase.IGTL_HEADER_SIZE])
    huge[42:50] = (1 << 40).to_bytes(8, "big")  # body size field
    with pytest.raises(IgtlProtocolError, match="exceeds"):
        IgtlInbound().feed(bytes(huge))


# -- the server over real TCP ----------------------------------------------------------------------
def test_client_receives_each_arms_transform_and_the_image(client_factory) -> None:
    with IgtlServer(("127.0.0.1", 0), IgtlConfig(pose_hz=30.0, image_hz=5.0)) as server:
        client = client_factory(server)
        sample = telemetry(time.monotonic())
        server.offer_telemetry(sample)
        picture = np.random.default_rng(1).integers(0, 255, size=(360, 640, 3), dtype=np.uint8)
        server.offer_image(picture)
        psm1 = client.wait_for_message("PSM1", timeout=5)
        psm2 = client.wait_for_message("PSM2", timeout=5)
        image = client.wait_for_message("Endoscope", timeout=5)
    assert psm1.message_type == "TRANSFORM" and psm2.message_type == "TRANSFORM"
    np.testing.assert_allclose(psm1.matrix, [[0, -1, 0, 10], [1, 0, 0, -20], [0, 0, 1, 30], [0, 0, 0, 1]],
                               atol=1e-5)
    np.testing.assert_allclose(psm2.matrix, [[0, 0, 1, -15], [1, 0, 0, 5], [0, 1, 0, 60], [0, 0, 0, 1]],
                               atol=1e-5)
    assert abs(psm1.timestamp - time.time()) < 5.0  # Unix time, not the robot's monotonic clock
    assert image.image.shape == (1, 180, 320, 3)  # decimated to image_max_width
    np.testing.assert_array_equal(image.image[0], picture[::2, ::2])
    stats = server.stats()
    assert stats["transforms"] == 2 and stats["images"] == 1 and stats["incoming_ignored"] == 0


def _count_messages(port: int, seconds: float) -> dict[str, int]:
    """A raw TCP reader counting OpenIGTLink messages by (type, device) for `seconds`."""
    counts: dict[str, int] = {}
    buffer = b""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(0.05)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= MessageBase.IGTL_HEADER_SIZE:
                fields = MessageBase.parse_header(buffer[:MessageBase.IGTL_HEADER_SIZE])
                total = MessageBase.IGTL_HEADER_SIZE + fields["body_size"]
                if len(buffer) < total:
                    break
                key = f"{fields['message_type']}:{fields['device_name']}"
                counts[key] = counts.get(key, 0) + 1
                buffer = buffer[total:]
    return counts


def test_rate_limits_hold_under_a_fast_source() -> None:
    stop = threading.Event()
    with IgtlServer(("127.0.0.1", 0), IgtlConfig(pose_hz=20.0, image_hz=2.0)) as server:
        def source() -> None:  # a 500 Hz producer: far above both limits
            picture = np.zeros((90, 160, 3), dtype=np.uint8)
            while not stop.is_set():
                server.offer_telemetry(telemetry(time.monotonic()))
                server.offer_image(picture)
                time.sleep(0.002)

        producer = threading.Thread(target=source)
        producer.start()
        try:
            counts = _count_messages(server.address[1], 1.5)
        finally:
            stop.set()
            producer.join()
    assert 15 <= counts.get("TRANSFORM:PSM1", 0) <= 32, counts  # 20 Hz over 1.5 s = 30
    assert counts.get("TRANSFORM:PSM1") == counts.get("TRANSFORM:PSM2"), counts
    assert 1 <= counts.get("IMAGE:Endoscope", 0) <= 4, counts  # 2 Hz over 1.5 s = 3


def test_client_messages_are_ignored_counted_and_garbage_disconnects(client_factory) -> None:
    with IgtlServer(("127.0.0.1", 0), IgtlConfig(pose_hz=50.0, image_hz=0.0)) as server:
        watcher = client_factory(server)
        meddler = client_factory(server)
        sample = telemetry(time.monotonic())
        server.offer_telemetry(sample)
        assert watcher.wait_for_message("PSM1", timeout=5) is not None
        move = np.eye(4)
        move[:3, 3] = (500.0, 500.0, 500.0)  # "move PSM1 half a metre": must change nothing
        meddler.send_message(pyigtl.TransformMessage(move, device_name="PSM1"), wait=True)
        meddler.send_message(pyigtl.StringMessage("disable", device_name="PSM1"), wait=True)
        wait_until(lambda: server.stats()["incoming_ignored"] == 2)
        assert server.stats()["incoming_by_type"] == {"TRANSFORM": 1, "STRING": 1}
        assert server.publisher._telemetry is sample  # nothing the client sent reached the robot side
        server.offer_telemetry(telemetry(time.monotonic()))
        psm1 = watcher.wait_for_message("PSM1", timeout=5)
        np.testing.assert_allclose(psm1.matrix[:3, 3], (10.0, -20.0, 30.0), atol=1e-5)

        with socket.create_connection(("127.0.0.1", server.address[1])) as rogue:
            rogue.sendall(b"GET / HTTP/1.1\r\nHost: robot\r\n\r\n" + b"\xff" * 64)
            wait_until(lambda: server.counters["protocol_errors"] == 1)
            rogue.settimeout(2.0)
            assert rogue.recv(1 << 16) == b""  # disconnected
        server.offer_telemetry(telemetry(time.monotonic()))
        assert watcher.wait_for_message("PSM2", timeout=5) is not None  # the others carry on
        assert server.error is None


def test_bad_listen_addresses_give_one_line_errors() -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        cases = {f":{busy.getsockname()[1]}": "in use", "192.0.2.7:18944": "cannot listen",
                 "robot:abc": "expected [HOST]:PORT", ":70000": "outside 0..65535"}
        for text, fragment in cases.items():
            with pytest.raises(IgtlAddressError) as info:
                IgtlServer(text)
            message = str(info.value)
            assert fragment in message and "\n" not in message and text in message, message
    finally:
        busy.close()
    unstarted = IgtlServer(("127.0.0.1", 0))
    unstarted.stop()
    unstarted.stop()  # idempotent, and fine without start()
    assert parse_listen_address(":18944") == ("127.0.0.1", 18944)  # loopback unless asked otherwise
    assert parse_listen_address("0.0.0.0:18944") == ("0.0.0.0", 18944)
    assert start_igtl(None) is None


def test_servo_loop_thread_feeds_the_server_as_the_robot_site_wires_it(client_factory) -> None:
    """The real 1 kHz ServoLoop thread on the kinematic driver, telemetry -> offer_telemetry -> client:
    the poses Slicer sees are the arms' measured poses, and every arm moves only as the robot decides."""
    from telesurg.robot.config import CartConfig
    from telesurg.robot.kinematic_driver import KinematicDriver
    from telesurg.robot.safety_config import SupervisorConfig, workspaces_from_cart
    from telesurg.robot.servo import ServoConfig, ServoLoop
    from telesurg.robot.supervisor import SafetySupervisor, SupervisorState

    cart = CartConfig()
    driver = KinematicDriver(cart)
    sup = SafetySupervisor(SupervisorConfig(workspace=workspaces_from_cart(cart)), ["PSM1", "PSM2"])
    server = start_igtl("127.0.0.1:0", IgtlConfig(pose_hz=30.0, image_hz=0.0))
    assert server is not None
    loop = ServoLoop(sup, driver, ServoConfig(), on_telemetry=server.offer_telemetry)
    loop.operator(lambda console, now: console.enable(now))
    loop.start()
    try:
        wait_until(lambda: sup.state("PSM2") is SupervisorState.READY)
        client = client_factory(server)
        meddler = client_factory(server)
        move = np.eye(4)
        move[:3, 3] = (0.0, 0.0, -200.0)
        meddler.send_message(pyigtl.TransformMessage(move, device_name="PSM2"), wait=True)
        for _ in range(3):  # the latest poses, after the meddling
            psm2 = client.wait_for_message("PSM2", timeout=5)
        wait_until(lambda: server.stats()["incoming_ignored"] == 1)
    finally:
        loop.stop()
        server.stop()
    measured = driver.arms()["PSM2"].measured_cp()
    np.testing.assert_allclose(psm2.matrix, pose_matrix_mm(measured.position, measured.orientation), atol=1e-4)
    assert loop.error is None and server.error is None and sup.violations == 0
    assert sup.state("PSM2") is SupervisorState.READY  # nobody moved it


def test_a_client_that_never_reads_loses_messages_and_stalls_nobody(client_factory) -> None:
    config = IgtlConfig(pose_hz=100.0, image_hz=30.0, max_backlog_bytes=64 << 10, send_buffer_bytes=16 << 10)
    stop = threading.Event()
    with IgtlServer(("127.0.0.1", 0), config) as server:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", server.address[1]))  # connects, then never reads
        try:
            def source() -> None:
                rng = np.random.default_rng(5)
                while not stop.is_set():
                    server.offer_telemetry(telemetry(time.monotonic()))
                    server.offer_image(rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8))
                    time.sleep(0.002)

            producer = threading.Thread(target=source)
            producer.start()
            try:
                wait_until(lambda: server.counters["dropped_slow"] > 0, timeout=10)
                counts = _count_messages(server.address[1], 1.0)  # a reader that keeps up, meanwhile
            finally:
                stop.set()
                producer.join()
        finally:
            stalled.close()
    assert counts.get("TRANSFORM:PSM1", 0) >= 50, counts  # 100 Hz: the fast reader was not held back
    assert counts.get("IMAGE:Endoscope", 0) >= 15, counts  # 30 Hz
    assert server.error is None


def test_a_failing_picture_source_is_counted_and_poses_go_on(client_factory) -> None:
    def broken() -> None:
        raise OSError("shared memory gone")

    with IgtlServer(("127.0.0.1", 0), IgtlConfig(pose_hz=30.0, image_hz=10.0), picture_source=broken) as server:
        client = client_factory(server)
        wait_until(lambda: server.counters["picture_errors"] >= 2)
        server.offer_telemetry(telemetry(time.monotonic()))
        assert client.wait_for_message("PSM1", timeout=5) is not None
        assert server.error is None
