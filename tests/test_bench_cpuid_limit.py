# SPDX-License-Identifier: Apache-2.0
"""``bench.cpuid_limit``: CPUID masked by CPUID faulting, so onnxruntime runs the kernels of an
older CPU. The mask lasts for the whole process, so each masked case runs in a fresh one."""

import subprocess
import sys

import pytest

from bench import cpuid_limit

pytest.importorskip("onnxruntime")

# The kernel's /proc/cpuinfo names of some features, where they differ from LLVM's.
_CPUINFO_NAMES = {"sse3": "pni", "pclmul": "pclmulqdq", "sse41": "sse4_1", "sse42": "sse4_2",
                  "bmi": "bmi1", "sha": "sha_ni", "avx512vbmi2": "avx512_vbmi2",
                  "avx512vnni": "avx512_vnni", "avx512bitalg": "avx512_bitalg",
                  "avx512vpopcntdq": "avx512_vpopcntdq",
                  "avx512vp2intersect": "avx512_vp2intersect", "amxbf16": "amx_bf16",
                  "amxtile": "amx_tile", "amxint8": "amx_int8", "avxvnni": "avx_vnni",
                  "avx512bf16": "avx512_bf16", "avxifma": "avx_ifma",
                  "avxvnniint8": "avx_vnni_int8", "avxneconvert": "avx_ne_convert",
                  "avxvnniint16": "avx_vnni_int16"}


def test_the_bit_table_matches_what_the_kernel_reports():
    """Every feature the kernel lists for this CPU has its bit set where the table says (the
    kernel may hide features CPUID has, never add one); AVX2 and SSE4.2 are on every CPU the
    suite runs on, so a wrong table fails here on any of them."""
    from tvm_qnn.target.x86 import host_cpu_flags

    flags = host_cpu_flags()
    if not flags:
        pytest.skip("/proc/cpuinfo has no flags line")
    listed = {name for name in cpuid_limit.CPUID_BITS
              if _CPUINFO_NAMES.get(name, name) in flags}
    assert {"avx2", "sse42", "fma"} <= listed
    assert cpuid_limit.visible(listed) == listed


def test_the_mask_clears_what_the_cpu_lacks():
    haswell = frozenset({"avx", "avx2", "fma", "f16c", "bmi", "bmi2", "popcnt", "sse42"})
    rules = dict(rule.split(":") for rule in cpuid_limit.mask_spec(haswell).split(";"))
    ebx7 = int(rules["7.0"].split(",")[1], 16)
    assert ebx7 >> 16 & 1 and ebx7 >> 31 & 1  # avx512f, avx512vl
    assert not ebx7 >> 5 & 1  # avx2 stays
    assert "1.*" in rules  # leaf 1 ignores ECX: its rule matches any
    every = frozenset(cpuid_limit.CPUID_BITS)
    assert cpuid_limit.mask_spec(every) == ""


_MASKED = """
import ctypes, json, sys
from bench import cpuid_limit, peer_isa
features = frozenset(sys.argv[1].split())
why = cpuid_limit.apply(features)
if why:
    sys.exit(why)
print(json.dumps(dict(seen=sorted(cpuid_limit.visible(set(cpuid_limit.CPUID_BITS))),
                      exact=peer_isa.ort_u8s8_exact())), flush=True)
if sys.argv[2] == "crash":
    ctypes.string_at(0)  # a real fault still ends the process
"""


def _masked(features: set[str], then: str = "exit"):
    return subprocess.run([sys.executable, "-c", _MASKED, " ".join(sorted(features)), then],
                          capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def faulting():
    why = cpuid_limit.why_no_faulting()
    if why:
        pytest.skip(f"CPUID cannot be masked here: {why}")


def test_onnxruntime_under_an_avx2_mask_runs_avx2_kernels(faulting):
    """Masked to an AVX2 CPU's features, CPUID reports nothing more and MLAS's u8*s8 GEMM
    saturates int16 pair sums, as it does on AVX2 hardware (without the mask, on a host with
    VNNI or AMX, the same probe is exact)."""
    import json

    host = cpuid_limit.visible(set(cpuid_limit.CPUID_BITS))
    haswell = {"sse3", "pclmul", "ssse3", "fma", "sse41", "sse42", "popcnt", "aes", "avx",
               "f16c", "bmi", "avx2", "bmi2"}
    done = _masked(haswell)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert set(result["seen"]) == host & haswell
    assert result["exact"] is False


def test_a_real_fault_under_the_mask_still_ends_the_process(faulting):
    done = _masked(set(cpuid_limit.CPUID_BITS) - {"avx512f"}, then="crash")
    assert done.returncode == -11, (done.returncode, done.stderr[-2000:])
    assert '"seen"' in done.stdout  # it got as far as the fault
