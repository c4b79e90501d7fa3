# SPDX-License-Identifier: Apache-2.0
"""tvm_qnn.runtime.rpc: the loopback RPC device, its secret key, its handshake deadline, and
what it leaves behind when it cannot start."""

import json
import socket
import stat
import struct
import threading
import time

import pytest
from tvm import rpc
from tvm.rpc import base

import tvm_qnn
from tvm_qnn.runtime.rpc import LOOPBACK, RemoteDevice, RPCDevice, registered_keys, tracker_summary
from tvm_qnn.runtime.rpc_serve import HANDSHAKE_SECONDS, key_name, redact
from tvm_qnn.testing.processes import descendants


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _new_processes(before) -> list:
    return [p for p in descendants() if p[0] not in {pid for pid, _ in before}]


@pytest.fixture(scope="module")
def device():
    with RPCDevice("qnn-rpc-test") as dev:
        yield dev


def test_start_without_its_tracker_fails_at_once_and_leaves_no_process():
    """Was: TVM's client retried the closed port for 60 s, then a RuntimeError traceback, and
    the server it had started ran on."""
    before = descendants()
    port = _closed_port()
    start = time.monotonic()
    with pytest.raises(tvm_qnn.TvmQnnError,
                       match=f"no TVM RPC tracker answers at 127.0.0.1:{port}"):
        RPCDevice("qnn-rpc-test", tracker_port=port).start()
    assert time.monotonic() - start < 5
    assert _new_processes(before) == []


def test_a_start_that_fails_after_starting_the_server_stops_it(device):
    before = descendants()
    late = RPCDevice("qnn-rpc-late", tracker_port=device.tracker_port)
    with pytest.raises(tvm_qnn.TvmQnnError, match="did not register key 'qnn-rpc-late'"):
        late.start(timeout=0)
    assert _new_processes(before) == []
    assert late.secret_file is None and not list(
        device.secret_file.parent.glob("qnn-rpc-late@*"))


def _request_is_answered(port: int, key: str, seconds: float) -> bool:
    """Whether the tracker hands out a server for ``key`` within ``seconds`` (TVM's client
    waits for one forever)."""
    with socket.create_connection((LOOPBACK, port), timeout=seconds) as sock:
        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        base.recvall(sock, 4)
        base.sendjson(sock, [base.TrackerCode.REQUEST, key, "", 1])
        try:
            return base.recvjson(sock)[0] == base.TrackerCode.SUCCESS
        except TimeoutError:
            return False


def test_only_a_client_with_the_secret_key_gets_the_device(device):
    """Was: the server registered under the board name, which the tracker's summary shows to
    anyone, and the tracker hands the device to anyone who asks for it by that name."""
    secret = device.remote.key
    assert key_name(secret) == "qnn-rpc-test" and len(secret) > len("qnn-rpc-test.") + 30
    summary = tracker_summary(LOOPBACK, device.tracker_port)
    assert secret not in json.dumps(summary)
    assert registered_keys(summary) == [redact(secret)]
    assert not _request_is_answered(device.tracker_port, "qnn-rpc-test", 2)
    # Nor in a command line (any local user reads those); in a file of this user only.
    for pid, cmdline in descendants():
        assert secret not in cmdline, (pid, cmdline)
    path = device.secret_file
    assert path.read_text().strip() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # The owner names the device, the key comes from the file.
    spec = f"qnn-rpc-test@127.0.0.1:{device.tracker_port}"
    assert RemoteDevice.parse(spec) == device.remote
    assert secret not in repr(device.remote) + str(device.remote)
    device.remote.check()
    with pytest.raises(tvm_qnn.TvmQnnError, match=r"has no device 'qnn-rpc-test' \(its "
                       r"devices: qnn-rpc-test\.…[0-9a-f]{6}\); 'qnn-rpc-test' there has a "
                       "secret key"):
        RemoteDevice("qnn-rpc-test", device.tracker_port).check()


def test_an_idle_connection_does_not_hold_up_sessions(device):
    """Was: TVM's server read the first connection's handshake with no timeout, one
    connection at a time: an idle one kept every session waiting (none began within 90 s)."""
    server_port = tracker_summary(LOOPBACK, device.tracker_port)["server_info"][0]["addr"][1]
    done = {}

    def session():
        remote = rpc.connect_tracker(LOOPBACK, device.tracker_port).request(
            device.remote.key, session_timeout=60)
        remote.upload(bytearray(b"ping"), "ping.txt")
        done["reply"] = bytes(remote.download("ping.txt"))

    with socket.create_connection((LOOPBACK, server_port)):  # connects, says nothing
        time.sleep(0.5)  # the server has taken it
        start = time.monotonic()
        client = threading.Thread(target=session, daemon=True)
        client.start()
        client.join(HANDSHAKE_SECONDS + 15)
        took = time.monotonic() - start
    assert done.get("reply") == b"ping", f"no session within {took:.0f} s"
    # And the next session is not held up at all.
    start = time.monotonic()
    session()
    assert time.monotonic() - start < 5
