# SPDX-License-Identifier: Apache-2.0
"""The emulated board as a TVM RPC device: a tracker and an RPC server on loopback.

This is what a user does with a real Raspberry Pi (``python -m tvm.exec.rpc_server --tracker
HOST:9190 --key rasp4b`` on the Pi), done here on the emulated aarch64 device. One trick: the
RPC server starts its workers with ``sys.executable``, which under ``qemu-aarch64`` (no binfmt)
must be a host script that runs qemu with the aarch64 Python; the server is started with
``sys.executable`` pointing at such a wrapper.

To use a real board instead: run the tracker here (``python -m tvm.exec.rpc_tracker --host
0.0.0.0 --port 9190``), the server on the Pi with ``--tracker <this host>:9190 --key rasp4b``,
and pass the same ``tracker``/``key`` to :func:`run_remote`.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import TvmQnnError
from .emulator import EmulatedDevice

LOOPBACK = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise TvmQnnError(f"the {what} exited: {proc.stderr.read() if proc.stderr else ''}")
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.3)
    raise TvmQnnError(f"the {what} did not listen on {LOOPBACK}:{port} within {timeout:.0f} s")


class EmulatedRPCDevice:
    """Tracker + RPC server of the emulated aarch64 device (loopback only); a context manager.

    Parameters
    ----------
    key : str
        The device key the server registers with the tracker (e.g. the board name).
    tracker_port : int, optional
        Use a tracker already listening on this loopback port instead of starting one.
    """

    def __init__(self, key: str = "rasp4b", tracker_port: int | None = None):
        self.key = key
        self.device = EmulatedDevice().ensure()
        self.tracker_port = tracker_port
        self._procs: list[subprocess.Popen] = []

    @property
    def remote(self) -> RemoteDevice:
        """This device as the tracker knows it (for ``Artifact.run_on``)."""
        if self.tracker_port is None:
            raise TvmQnnError("the device is not started")
        return RemoteDevice(self.key, self.tracker_port)

    def start(self, timeout: float = 180) -> EmulatedRPCDevice:
        """Start the tracker (unless given) and the emulated server; wait until registered."""
        if self.tracker_port is None:
            self.tracker_port = _free_port()
            tracker = subprocess.Popen(
                [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", LOOPBACK,
                 "--port", str(self.tracker_port), "--port-end", str(self.tracker_port + 1)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            self._procs.append(tracker)
            _wait_for_port(self.tracker_port, tracker, "RPC tracker", 60)
        wrapper = self._wrapper()
        server_port = _free_port()
        code = ("import sys, runpy; sys.executable = %r; sys.argv = ['rpc_server', '--host', %r,"
                " '--port', '%d', '--port-end', '%d', '--tracker', '%s:%d', '--key', %r];"
                " runpy.run_module('tvm.exec.rpc_server', run_name='__main__')"
                % (str(wrapper), LOOPBACK, server_port, server_port + 1, LOOPBACK,
                   self.tracker_port, self.key))
        env = dict(os.environ, PYTHONPATH=str(self.device.site), TVM_NUM_THREADS="1")
        server = subprocess.Popen([str(wrapper), "-c", code], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._procs.append(server)
        self._wait_registered(server, timeout)
        return self

    def _wrapper(self) -> Path:
        path = self.device.home / "python-aarch64"
        script = ("#!/bin/sh\nexec qemu-aarch64 -L %s %s \"$@\"\n"
                  % (self.device.sysroot, self.device.sysroot / "usr" / "bin" / "python3.11"))
        if not path.exists() or path.read_text() != script:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(script)
            tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            os.replace(tmp, path)
        return path

    def _wait_registered(self, server: subprocess.Popen, timeout: float) -> None:
        from tvm import rpc

        deadline = time.time() + timeout
        while time.time() < deadline:
            if server.poll() is not None:
                raise TvmQnnError(f"the emulated RPC server exited: {server.stderr.read()}")
            summary = rpc.connect_tracker(LOOPBACK, self.tracker_port).summary()
            if any(self.key in str(s) for s in summary.get("server_info", [])):
                return
            time.sleep(1.0)
        raise TvmQnnError(f"the emulated RPC server did not register key {self.key!r} with the "
                          f"tracker within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the server and the tracker this object started."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self._procs.clear()

    def __enter__(self) -> EmulatedRPCDevice:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


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


__all__ = ["EmulatedRPCDevice", "RemoteDevice", "run_remote"]
