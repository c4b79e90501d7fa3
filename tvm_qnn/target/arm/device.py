# SPDX-License-Identifier: Apache-2.0
"""The emulated aarch64 board as a TVM RPC device (``tvm-qnn device start``).

The server runs under qemu-user; TVM's server spawns its workers with ``sys.executable``, which
without binfmt must be a host script that execs qemu-aarch64 with the aarch64 Python, so the
server is started with ``sys.executable`` pointing at such a wrapper. Everything else is the
host's :class:`~tvm_qnn.runtime.rpc.RPCDevice`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ...runtime.rpc import LOOPBACK, RemoteDevice, RPCDevice, run_remote
from .emulator import EmulatedDevice


class EmulatedRPCDevice(RPCDevice):
    """Tracker + RPC server of the emulated aarch64 device (loopback only); a context manager.

    Parameters
    ----------
    key : str
        The device key the server registers with the tracker (e.g. the board name).
    tracker_port : int, optional
        Use a tracker already listening on this loopback port instead of starting one.
    """

    what = "emulated RPC server"

    def __init__(self, key: str = "rasp4b", tracker_port: int | None = None):
        super().__init__(key, tracker_port)
        self.device = EmulatedDevice()

    def _prepare(self) -> None:
        # Built on first use (minutes), after the check that a given tracker answers.
        self.device.ensure()

    def _server_executable(self) -> str:
        return str(self._wrapper())

    def _server_command(self, code):
        env = dict(os.environ, PYTHONPATH=str(self.device.site), TVM_NUM_THREADS="1")
        return [str(self._wrapper()), "-c", code], env

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


__all__ = ["LOOPBACK", "EmulatedRPCDevice", "RemoteDevice", "run_remote"]
