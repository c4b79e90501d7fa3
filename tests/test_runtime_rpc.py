# SPDX-License-Identifier: Apache-2.0
"""tvm_qnn.runtime.rpc: the loopback RPC device, and what it leaves behind when it cannot
start."""

import socket
import time

import pytest

import tvm_qnn
from tvm_qnn.runtime.rpc import LOOPBACK, RPCDevice
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
