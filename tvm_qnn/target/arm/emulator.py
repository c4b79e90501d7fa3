# SPDX-License-Identifier: Apache-2.0
"""An emulated aarch64 device: Debian's arm64 Python and TVM's aarch64 wheels under qemu-user.

No ARM machine is needed to check ARM code: ``qemu-aarch64`` runs an arm64 ``python3.11``
(Debian packages unpacked into one folder, no chroot) that imports the aarch64 wheels of
apache-tvm / apache-tvm-ffi and runs the cross-compiled library. The device is built once,
on first use, into a cache folder outside the repository (``$TVM_QNN_CACHE_DIR`` or
``~/.cache/tvm_qnn``); building it needs root (``dpkg --add-architecture arm64``), apt and pip.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ...errors import TvmQnnError
from ...knobs import cache_dir

PACKAGES = [
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "zlib1g",
    "libexpat1", "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libsqlite3-0", "libncursesw6",
    "libtinfo6", "libreadline8", "libuuid1", "libgcc-s1", "libstdc++6", "libcrypt1", "libnsl2",
    "libtirpc3", "libdb5.3", "libgssapi-krb5-2", "libkrb5-3", "libk5crypto3",
    "libkrb5support0", "libcom-err2", "libkeyutils1",
]
WHEELS = ["apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1", "numpy", "psutil",
          "cloudpickle", "tornado"]

# Runs inside the emulated device: load the library, run "main" on the inputs, save outputs.
_RUNNER = """
import sys, numpy as np, tvm
from tvm import relax
lib = tvm.runtime.load_module(sys.argv[1])
feeds = np.load(sys.argv[2])
vm = relax.VirtualMachine(lib, tvm.cpu())
out = vm["main"](*[tvm.runtime.tensor(feeds[f"in{i}"]) for i in range(len(feeds.files))])
outs = [out] if hasattr(out, "numpy") else list(out)
np.savez(sys.argv[3], **{f"out{i}": o.numpy() for i, o in enumerate(outs)})
"""


# Runs a batch of single-kernel libraries in one emulated process (one ~15 s start for all).
_KERNEL_RUNNER = """
import sys, json, numpy as np, tvm
for case in json.load(open(sys.argv[1])):
    lib = tvm.runtime.load_module(case["library"])
    feeds = np.load(case["inputs"])
    args = [tvm.runtime.tensor(feeds[f"in{i}"]) for i in range(len(feeds.files))]
    out = tvm.runtime.tensor(np.zeros(case["shape"], case["dtype"]))
    lib(*args, out)
    np.save(case["output"], out.numpy())
"""


def _say(msg: str) -> None:
    print(f"tvm_qnn emulator: {msg}", file=sys.stderr, flush=True)


def _apt_download(pkgs: list[str], dest: Path) -> None:
    """``apt-get download`` ``pkgs`` into ``dest``, updating apt's lists when they lack them."""
    def run(apt, *args):
        return subprocess.run([*apt, *args], cwd=dest, capture_output=True, text=True)

    if run(["apt-get"], "download", *pkgs).returncode == 0:
        return
    attempts = [["apt-get"]]
    if os.geteuid() == 0:
        # apt checks signatures as its sandbox user _apt. Some containers leave that user
        # unable to (measured: /dev/null not writable by others, so apt-key reports gpgv as
        # missing, and update keeps the old lists, without the arm64 ones); root can check
        # them outside the sandbox.
        attempts.append(["apt-get", "-o", "APT::Sandbox::User=root"])
    for apt in attempts:
        _say(f"{' '.join(apt)} update (arm64 lists)")
        update = run(apt, "update", "-q")
        got = run(apt, "download", *pkgs)
        if got.returncode == 0:
            return
    raise TvmQnnError("building the aarch64 emulator failed at apt-get download of the arm64 "
                      f"packages: {got.stderr.strip()[-600:]} (apt-get update said: "
                      f"{update.stderr.strip()[-400:] or 'nothing'})")


class EmulatedDevice:
    """The aarch64 Linux device under ``qemu-aarch64``."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.home = Path(root) if root else Path(cache_dir()) / "emulator-aarch64"
        self.sysroot = self.home / "root"
        self.site = self.home / "site"

    @property
    def ready(self) -> bool:
        """True once the device has been built."""
        return (self.home / "READY").exists()

    def ensure(self) -> EmulatedDevice:
        """Build the device if it is not built yet (progress goes to stderr)."""
        if self.ready:
            return self
        self.home.mkdir(parents=True, exist_ok=True)
        # One build at a time (parallel test workers, two `device start`s): the others wait
        # for it and find the device ready.
        fd = os.open(self.home / "build.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not self.ready:
                self._build()
        finally:
            os.close(fd)
        return self

    def _build(self) -> None:
        for tool in ("qemu-aarch64", "dpkg-deb", "apt-get"):
            if shutil.which(tool) is None:
                raise TvmQnnError(f"the aarch64 emulator needs {tool} (Debian packages qemu-user "
                                  "and dpkg; `make sysdeps` installs them)")
        work = Path(tempfile.mkdtemp(dir=self.home, prefix="build-"))
        try:
            _say(f"building an aarch64 device in {self.home} (once: ~15 MB of arm64 Debian "
                 "packages and ~400 MB of aarch64 wheels)")
            self._run(["dpkg", "--add-architecture", "arm64"])
            debs = work / "debs"
            debs.mkdir()
            pkgs = [f"{p}:arm64" for p in PACKAGES]
            _apt_download(pkgs, debs)
            root = work / "root"
            for deb in sorted(debs.glob("*.deb")):
                self._run(["dpkg-deb", "-x", str(deb), str(root)])
            _say("installing the aarch64 wheels of TVM")
            self._run([sys.executable, "-m", "pip", "install", "-q", "--target",
                       str(work / "site"), "--platform", "manylinux_2_28_aarch64",
                       "--platform", "manylinux2014_aarch64", "--only-binary=:all:",
                       "--python-version", "3.11", "--implementation", "cp", *WHEELS])
            for name in ("root", "site"):
                target = self.home / name
                if target.exists():
                    shutil.rmtree(target)
                os.replace(work / name, target)
            (self.home / "READY").write_text("ok\n")
            _say("device ready")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _run(cmd, cwd=None):
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise TvmQnnError(f"building the aarch64 emulator failed at {' '.join(cmd[:3])}…: "
                              f"{proc.stderr.strip()[-800:]}")

    def python(self, args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
        """Run the device's python with ``args`` (raises with its stderr on failure)."""
        self.ensure()
        cmd = ["qemu-aarch64", "-L", str(self.sysroot),
               str(self.sysroot / "usr" / "bin" / "python3.11"), *args]
        env = {"PYTHONPATH": str(self.site), "PATH": os.environ.get("PATH", ""),
               "TVM_NUM_THREADS": os.environ.get("TVM_NUM_THREADS", "1")}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise TvmQnnError(f"the emulated aarch64 run failed: {proc.stderr.strip()[-1500:]}")
        return proc

    def run_kernels(self, cases: list[tuple[str, list[np.ndarray], tuple, str]]
                    ) -> list[np.ndarray]:
        """Run single-PrimFunc libraries ``(library, inputs, out_shape, out_dtype)`` in one
        emulated process (destination-passing: the output is the last argument)."""
        import json

        with tempfile.TemporaryDirectory(prefix="tvm_qnn_emu_") as tmp:
            plan = []
            for i, (library, inputs, shape, dtype) in enumerate(cases):
                feeds = Path(tmp) / f"in{i}.npz"
                np.savez(feeds, **{f"in{j}": a for j, a in enumerate(inputs)})
                plan.append({"library": str(library), "inputs": str(feeds),
                             "output": str(Path(tmp) / f"out{i}.npy"),
                             "shape": list(shape), "dtype": dtype})
            (Path(tmp) / "plan.json").write_text(json.dumps(plan))
            runner = Path(tmp) / "runner.py"
            runner.write_text(_KERNEL_RUNNER)
            self.python([str(runner), str(Path(tmp) / "plan.json")])
            return [np.load(p["output"]) for p in plan]

    def run_library(self, library: str | os.PathLike, inputs: list[np.ndarray]
                    ) -> list[np.ndarray]:
        """Run ``main`` of an exported aarch64 library on ``inputs``; returns its outputs."""
        with tempfile.TemporaryDirectory(prefix="tvm_qnn_emu_") as tmp:
            runner = Path(tmp) / "runner.py"
            runner.write_text(_RUNNER)
            feeds, outs = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
            np.savez(feeds, **{f"in{i}": a for i, a in enumerate(inputs)})
            self.python([str(runner), str(library), str(feeds), str(outs)])
            with np.load(outs) as data:
                return [data[f"out{i}"] for i in range(len(data.files))]
