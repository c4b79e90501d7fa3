# SPDX-License-Identifier: Apache-2.0
"""TVM RPC devices on loopback: a tracker and a server, the way a board serves TVM.

:class:`RPCDevice` runs TVM's own ``tvm.exec.rpc_tracker`` and ``tvm.exec.rpc_server`` with
this host's Python (the tuning runner and its tests use it); the emulated ARM board
(:class:`tvm_qnn.target.arm.device.EmulatedRPCDevice`) is the same with its server under
qemu. :class:`RemoteDevice` names any device registered with a tracker, a real board included.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from ..errors import TvmQnnError

LOOPBACK = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _spawn(cmd: list[str], env: dict) -> subprocess.Popen:
    """Start ``cmd`` in its own session (so :func:`_terminate` stops its children with it),
    its stderr to a temporary file (a pipe nobody reads blocks a chatty process)."""
    log = tempfile.TemporaryFile(mode="w+")
    try:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    except BaseException:
        log.close()
        raise
    proc.log = log
    return proc


def _exit_message(proc: subprocess.Popen, what: str) -> str:
    proc.log.seek(0)
    return f"the {what} exited (code {proc.returncode}): {proc.log.read()[-1500:].strip()}"


def _wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TvmQnnError(_exit_message(proc, what))
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.3)
    raise TvmQnnError(f"the {what} did not listen on {LOOPBACK}:{port} within {timeout:.0f} s")


def tracker_summary(host: str, port: int, timeout: float = 5.0) -> dict:
    """The summary of the TVM RPC tracker at ``host:port``; a :class:`TvmQnnError` naming the
    address when none answers within ``timeout`` seconds (TVM's own client retries a refused
    connection for 60 s, then raises a bare RuntimeError)."""
    from tvm.rpc import base

    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            if struct.unpack("<i", base.recvall(sock, 4))[0] != base.RPC_TRACKER_MAGIC:
                raise TvmQnnError(f"{where} is not a TVM RPC tracker")
            base.sendjson(sock, [base.TrackerCode.SUMMARY])
            code, summary = base.recvjson(sock)
    except (OSError, ValueError, struct.error) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err) or "timeout"
        raise TvmQnnError(f"no TVM RPC tracker answers at {where} ({why})") from None
    if code != base.TrackerCode.SUCCESS:
        raise TvmQnnError(f"the RPC tracker at {where} refused its summary: {summary!r}")
    return summary


def registered_keys(summary: dict) -> list[str]:
    """The keys of the servers in a tracker summary (as the tracker shows them)."""
    return [s.get("key", "").partition(":")[2] for s in summary.get("server_info", [])]


class RPCDevice:
    """Tracker + RPC server on loopback, this host's Python; a context manager.

    Parameters
    ----------
    key : str
        The device key the server registers with the tracker.
    tracker_port : int, optional
        Use a tracker already listening on this loopback port instead of starting one.
    """

    what = "RPC server"

    def __init__(self, key: str, tracker_port: int | None = None):
        self.key = key
        self.tracker_port = tracker_port
        self._tracker: subprocess.Popen | None = None
        self._server: subprocess.Popen | None = None

    @property
    def remote(self) -> RemoteDevice:
        """This device as the tracker knows it (for ``Artifact.run_on`` and ``tune``)."""
        if self.tracker_port is None:
            raise TvmQnnError("the device is not started")
        return RemoteDevice(self.key, self.tracker_port)

    def _server_command(self, code: str) -> tuple[list[str], dict]:
        """The command (and environment) that runs ``python -c code`` on the device."""
        return [sys.executable, "-c", code], dict(os.environ)

    def _server_executable(self) -> str:
        """What the server's workers are spawned with (its ``sys.executable``)."""
        return sys.executable

    def _prepare(self) -> None:
        """Make the device ready to serve (first thing :meth:`start` does, once it knows the
        tracker answers; the emulated board builds itself here)."""

    def start(self, timeout: float = 180) -> RPCDevice:
        """Start the tracker (unless given) and the server; wait until it is registered.

        Raises :class:`TvmQnnError` at once when the given tracker does not answer; on any
        failure (Ctrl-C included), everything this call started is stopped.
        """
        try:
            if self.tracker_port is not None:
                tracker_summary(LOOPBACK, self.tracker_port)
            self._prepare()
            if self.tracker_port is None:
                port = _free_port()
                self._tracker = _spawn(
                    [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", LOOPBACK,
                     "--port", str(port), "--port-end", str(port + 1)], dict(os.environ))
                self.tracker_port = port
                _wait_for_port(port, self._tracker, "RPC tracker", 60)
            self.start_server(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_server(self, timeout: float = 180) -> None:
        """(Re)start the server alone, e.g. after :meth:`stop_server`; on failure it is
        stopped again."""
        if self.tracker_port is None:
            raise TvmQnnError("the device is not started")
        server_port = _free_port()
        code = ("import sys, runpy; sys.executable = %r; sys.argv = ['rpc_server', '--host', %r,"
                " '--port', '%d', '--port-end', '%d', '--tracker', '%s:%d', '--key', %r];"
                " runpy.run_module('tvm.exec.rpc_server', run_name='__main__')"
                % (self._server_executable(), LOOPBACK, server_port, server_port + 1, LOOPBACK,
                   self.tracker_port, self.key))
        cmd, env = self._server_command(code)
        try:
            self._server = _spawn(cmd, env)
            self._wait_registered(timeout)
        except BaseException:
            self.stop_server()
            raise

    def _wait_registered(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._server.poll() is not None:
                raise TvmQnnError(_exit_message(self._server, self.what))
            if self.key in registered_keys(tracker_summary(LOOPBACK, self.tracker_port)):
                return
            if time.monotonic() > deadline:
                raise TvmQnnError(f"the {self.what} did not register key {self.key!r} with the "
                                  f"tracker within {timeout:.0f} s")
            time.sleep(0.5)

    def stop_server(self) -> None:
        """Kill the server (the tracker stays): what a board that dies looks like."""
        _terminate(self._server)
        self._server = None

    def stop(self) -> None:
        """Stop the server and the tracker this object started."""
        self.stop_server()
        if self._tracker is not None:
            _terminate(self._tracker)
            self._tracker = None
            self.tracker_port = None

    def __enter__(self) -> RPCDevice:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _terminate(proc: subprocess.Popen | None) -> None:
    """Stop ``proc`` and every process of its group (it was started in a new session)."""
    import signal

    if proc is None:
        return
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=10)
                if sig == signal.SIGTERM:
                    # The group leader is gone; make sure no worker of it outlives it.
                    os.killpg(proc.pid, signal.SIGKILL)
                return
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                return
    finally:
        proc.log.close()


@dataclass(frozen=True)
class RemoteDevice:
    """A device registered with a TVM RPC tracker: a board running
    ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY``, or ``tvm-qnn device start``.
    """

    key: str
    tracker_port: int
    tracker_host: str = LOOPBACK

    @classmethod
    def parse(cls, spec: str) -> RemoteDevice:
        """``KEY@HOST:PORT`` (or ``KEY@PORT`` on loopback) → a RemoteDevice."""
        key, _, where = spec.partition("@")
        host, _, port = where.rpartition(":")
        if not key or not port.isdigit():
            raise TvmQnnError(f"device {spec!r}: expected KEY@HOST:PORT "
                              "(e.g. rasp4b@127.0.0.1:9190)")
        return cls(key, int(port), host or LOOPBACK)


def run_remote(library: str | os.PathLike, inputs: list[np.ndarray], key: str,
               tracker_port: int, tracker_host: str = LOOPBACK,
               timeout: float = 600) -> list[np.ndarray]:
    """Run ``main`` of an exported library on a device registered with a tracker."""
    from tvm import relax, rpc

    remote = rpc.connect_tracker(tracker_host, tracker_port).request(
        key, priority=1, session_timeout=timeout)
    remote.upload(str(library))
    module = remote.load_module(os.path.basename(str(library)))
    vm = relax.VirtualMachine(module, remote.cpu())
    import tvm

    args = [tvm.runtime.tensor(np.ascontiguousarray(a), remote.cpu()) for a in inputs]
    out = vm["main"](*args)
    outs = [out] if hasattr(out, "numpy") else list(out)
    return [o.numpy() for o in outs]


__all__ = ["LOOPBACK", "RPCDevice", "RemoteDevice", "registered_keys", "run_remote",
           "tracker_summary"]
