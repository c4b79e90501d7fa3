# SPDX-License-Identifier: Apache-2.0
"""Finding (or, in a source checkout, building) the simulator's shared library.

``pip install`` (editable or not) builds ``libtvm_qnn_accel_sim.so`` with CMake and installs it
next to this file in site-packages. When it is missing, e.g. a source tree used without
installing, the library is built once with CMake into ``$TVM_QNN_CACHE_DIR/accel-<hash>``
(``~/.cache/tvm_qnn`` by default), keyed on the sources.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig

import tvm_ffi

from .. import knobs
from ..errors import ConfigError, CycleBudgetError, DeadlockError, ProgramError

# The C++ simulator throws tvm-ffi errors of these kinds; they arrive as tvm_qnn's classes.
tvm_ffi.register_error("AccelProgramError", ProgramError)
tvm_ffi.register_error("AccelDeadlockError", DeadlockError)
tvm_ffi.register_error("AccelBudgetError", CycleBudgetError)
tvm_ffi.register_error("AccelConfigError", ConfigError)

LIB_NAME = "libtvm_qnn_accel_sim.so"
_SOURCE_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _installed_candidates() -> list[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    dirs = [here]
    # Editable installs leave the sources here and the built library in site-packages.
    for base in [sysconfig.get_paths()["platlib"], sysconfig.get_paths()["purelib"], *sys.path]:
        if base:
            dirs.append(os.path.join(base, "tvm_qnn", "bitserial_accel"))
    return [os.path.join(d, LIB_NAME) for d in dict.fromkeys(dirs)]


def _source_hash() -> str:
    h = hashlib.sha256()
    src = os.path.join(_SOURCE_ROOT, "src", "accel")
    # Files only: src/accel/rtl (the Verilog, built separately by .rtl) is a folder.
    for rel in ["CMakeLists.txt", *sorted(os.path.join("src", "accel", f) for f in os.listdir(src)
                                          if os.path.isfile(os.path.join(src, f)))]:
        with open(os.path.join(_SOURCE_ROOT, rel), "rb") as f:
            h.update(rel.encode() + f.read())
    return h.hexdigest()[:16]


def build_library(build_dir: str | None = None, tests: bool = False) -> str:
    """Build the simulator from src/accel with CMake (serially, ``-j1``); return the library path.

    Only works in a source checkout (CMakeLists.txt and src/accel next to the package).
    ``tests=True`` also builds the C++ unit tests (``ctest`` in ``build_dir``).
    """
    if not os.path.isdir(os.path.join(_SOURCE_ROOT, "src", "accel")):
        raise FileNotFoundError(f"{LIB_NAME} is not installed and no sources to build it from "
                                f"(expected {_SOURCE_ROOT}/src/accel); reinstall tvm_qnn")
    if shutil.which("cmake") is None:
        raise FileNotFoundError(f"{LIB_NAME} is not installed and cmake is not on PATH")
    build_dir = build_dir or os.path.join(knobs.cache_dir(), f"accel-{_source_hash()}")
    lib = os.path.join(build_dir, LIB_NAME)
    if os.path.exists(lib) and not tests:
        return lib
    print(f"tvm_qnn.bitserial_accel: building the simulator into {build_dir}", file=sys.stderr)
    subprocess.run(["cmake", "-S", _SOURCE_ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
                    f"-DPython_EXECUTABLE={sys.executable}",
                    f"-DTVM_QNN_ACCEL_TESTS={'ON' if tests else 'OFF'}"],
                   check=True, capture_output=True, text=True)
    subprocess.run(["cmake", "--build", build_dir, "-j1"], check=True, capture_output=True,
                   text=True)
    return lib


@functools.lru_cache(maxsize=None)
def library() -> tvm_ffi.Module:
    """The loaded simulator module (functions ``isa`` and ``run``), found or built once."""
    for path in _installed_candidates():
        if os.path.exists(path):
            return tvm_ffi.load_module(path)
    return tvm_ffi.load_module(build_library())
