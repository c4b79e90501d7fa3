# SPDX-License-Identifier: Apache-2.0
"""Limit onnxruntime to an older CPU's instruction sets by masking what CPUID answers.

onnxruntime's MLAS reads CPUID once, when it first runs, and has no option to cap its ISA. On
CPUs and hypervisors with CPUID faulting (Intel's ``cpuid_fault`` flag) the C shim
``cpuid_mask.c`` makes every CPUID of this process answer with the feature bits of the other
instruction sets cleared (:func:`apply`); elsewhere (AMD, KVM guests that refuse it with
ENODEV) :func:`apply` says why it cannot. The mask covers the thread that applies it and the
threads it starts afterwards, so it is applied before onnxruntime is imported (its pool and
MLAS's first CPUID come later), and after libtvm_ffi is loaded (see :func:`apply`).
:func:`read_cpuid` checks what the process now sees.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import os
import shutil
import subprocess
import sys

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpuid_mask.c")

# LLVM feature name -> (leaf, subleaf, register 0-3 = eax..edx, bit): the instruction sets that
# choose library kernels (Intel SDM vol. 2A, CPUID leaves 01H and 07H; leaf 1 has no subleaf).
CPUID_BITS = {
    "sse3": (1, 0, 2, 0), "pclmul": (1, 0, 2, 1), "ssse3": (1, 0, 2, 9), "fma": (1, 0, 2, 12),
    "sse41": (1, 0, 2, 19), "sse42": (1, 0, 2, 20), "popcnt": (1, 0, 2, 23),
    "aes": (1, 0, 2, 25), "avx": (1, 0, 2, 28), "f16c": (1, 0, 2, 29),
    "bmi": (7, 0, 1, 3), "avx2": (7, 0, 1, 5), "bmi2": (7, 0, 1, 8), "avx512f": (7, 0, 1, 16),
    "avx512dq": (7, 0, 1, 17), "avx512ifma": (7, 0, 1, 21), "avx512pf": (7, 0, 1, 26),
    "avx512er": (7, 0, 1, 27), "avx512cd": (7, 0, 1, 28), "sha": (7, 0, 1, 29),
    "avx512bw": (7, 0, 1, 30), "avx512vl": (7, 0, 1, 31),
    "avx512vbmi": (7, 0, 2, 1), "avx512vbmi2": (7, 0, 2, 6), "gfni": (7, 0, 2, 8),
    "vaes": (7, 0, 2, 9), "vpclmulqdq": (7, 0, 2, 10), "avx512vnni": (7, 0, 2, 11),
    "avx512bitalg": (7, 0, 2, 12), "avx512vpopcntdq": (7, 0, 2, 14),
    "avx512vp2intersect": (7, 0, 3, 8), "amxbf16": (7, 0, 3, 22), "avx512fp16": (7, 0, 3, 23),
    "amxtile": (7, 0, 3, 24), "amxint8": (7, 0, 3, 25),
    "avxvnni": (7, 1, 0, 4), "avx512bf16": (7, 1, 0, 5), "avxifma": (7, 1, 0, 23),
    "avxvnniint8": (7, 1, 3, 4), "avxneconvert": (7, 1, 3, 5), "avxvnniint16": (7, 1, 3, 10),
}

_NO_SUBLEAF = {1}  # leaves that ignore ECX (callers may leave anything in it)
_applied: str | None = None  # the spec in force in this process
_SYS_ARCH_PRCTL, _ARCH_SET_CPUID = 158, 0x1012  # x86-64 Linux


def mask_spec(features: frozenset[str]) -> str:
    """The shim's rules clearing every bit of :data:`CPUID_BITS` whose feature is not in
    ``features``: ``"leaf.subleaf:eax,ebx,ecx,edx;..."`` in hex (subleaf ``*``: any)."""
    masks: dict[tuple[int, int], list[int]] = {}
    for name, (leaf, subleaf, register, bit) in CPUID_BITS.items():
        if name not in features:
            masks.setdefault((leaf, subleaf), [0, 0, 0, 0])[register] |= 1 << bit
    return ";".join(f"{leaf:x}.{'*' if leaf in _NO_SUBLEAF else f'{sub:x}'}:"
                    + ",".join(f"{m:x}" for m in regs)
                    for (leaf, sub), regs in sorted(masks.items()))


def _build() -> str:
    """The shim, compiled once into the cache (keyed on its source), published whole.

    tvm_qnn is imported here, not at the top: ``peer_isa`` imports this module before the
    PyTorch limits are in the environment, and importing tvm_qnn imports PyTorch."""
    from tvm_qnn import knobs
    from tvm_qnn.runtime.atomic import publish

    with open(_SOURCE, "rb") as f:
        source = f.read()
    cache = knobs.cache_dir()
    path = os.path.join(cache, f"cpuid_mask-{hashlib.sha256(source).hexdigest()[:16]}.so")
    if os.path.exists(path):
        return path
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise OSError("no C compiler (cc) to build bench/cpuid_mask.c")
    os.makedirs(cache, exist_ok=True)
    with publish() as temp:
        out = temp(path, executable=True)
        done = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", out, _SOURCE],
                              capture_output=True, text=True, check=False)
        if done.returncode:
            errors = [ln for ln in done.stderr.splitlines() if "error" in ln] or [done.stderr]
            raise OSError(f"{cc} could not build {_SOURCE}: {errors[0].strip()}")
    return path


@functools.lru_cache(maxsize=None)
def _library() -> ctypes.CDLL:
    lib = ctypes.CDLL(_build())
    lib.tvm_qnn_cpuid_mask.argtypes = [ctypes.c_char_p]
    lib.tvm_qnn_cpuid.argtypes = [ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32 * 4]
    lib.tvm_qnn_cpuid_hooked.restype = ctypes.c_int
    return lib


def apply(features: frozenset[str]) -> str | None:
    """Mask CPUID to ``features`` for this process from now on. None when done (or already
    in force), else why it cannot be: no CPUID faulting here, no C compiler, or onnxruntime
    already imported (it may have read CPUID: only a fresh process is sure)."""
    global _applied
    spec = mask_spec(features)
    if _applied == spec:
        return None
    if _applied is not None:
        return "a different CPUID mask is in force in this process"
    if "onnxruntime" in sys.modules:
        return "onnxruntime was imported before CPUID could be masked"
    why = why_no_faulting()
    if why:
        return why
    # libtvm_ffi installs its own SIGSEGV handler when it loads, over any other (it does not
    # pass faults on): loaded first, it is the one the mask's handler passes other faults to.
    import tvm_ffi  # noqa: F401

    try:
        lib = _library()
    except OSError as err:
        return str(err)
    code = lib.tvm_qnn_cpuid_mask(spec.encode())
    if code:
        return f"the CPUID mask could not be set: {os.strerror(code)}"
    _applied = spec
    return None


def hooked() -> bool:
    """Whether the mask's SIGSEGV handler is still the process's (a library that installs
    its own after :func:`apply` would turn the next CPUID into a crash)."""
    return _applied is not None and bool(_library().tvm_qnn_cpuid_hooked())


def read_cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
    """``eax, ebx, ecx, edx`` of CPUID as this process sees it (masked when :func:`apply`
    succeeded)."""
    out = (ctypes.c_uint32 * 4)()
    _library().tvm_qnn_cpuid(leaf, subleaf, out)
    return tuple(out)


def visible(features: frozenset[str] | set[str]) -> set[str]:
    """Which of ``features`` (names of :data:`CPUID_BITS`) this process's CPUID reports."""
    seen = set()
    for name in features:
        leaf, subleaf, register, bit = CPUID_BITS[name]
        if read_cpuid(leaf, subleaf)[register] >> bit & 1:
            seen.add(name)
    return seen


def why_no_faulting() -> str | None:
    """None when this CPU and kernel offer CPUID faulting, else why not. Asks to leave CPUID
    enabled (the normal state), which fails as enabling faulting would where it is missing."""
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        return "CPUID masking needs Linux on x86-64"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_ARCH_PRCTL, _ARCH_SET_CPUID, 1) == 0:
        return None
    code = ctypes.get_errno()
    if code == errno.ENODEV:
        return "this CPU or hypervisor has no CPUID faulting (arch_prctl ARCH_SET_CPUID: ENODEV)"
    return f"arch_prctl(ARCH_SET_CPUID): {os.strerror(code)}"
