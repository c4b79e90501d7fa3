# SPDX-License-Identifier: Apache-2.0
"""Each target compiles to its own ISA: checked in the generated assembly, on any host.

Nothing here runs the code or needs a cross toolchain or emulator: LLVM generates the code for
the named CPU in process, and the expected instructions follow from the target itself (its
ISA class), not from the CPU the test runs on.
"""

import re

import pytest

import tvm_qnn
from tvm_qnn.target import resolve_target
from tvm_qnn.testing.onnx_models import make_conv_model, make_dense_model


def _popcount_instruction(target) -> tuple[str, str | None]:
    """(the vector popcount the target's class must use, an instruction it must not use)."""
    if target.name == "arm_cpu":
        # aarch64: byte popcount on 128-bit registers; armv7 NEON: vcnt on bytes.
        return (r"\bcnt\s+v\d+\.16b", None) if target.board.arch == "aarch64" else (
            r"\bvcnt\.8\b", None)
    if target.has_vpopcntdq:
        return r"\bvpopcntq\s+%zmm", None
    # No VPOPCNTDQ: popcount by nibble lookup (vpshufb), never vpopcntq.
    return r"\bvpshufb\s", r"\bvpopcntq\b"


@pytest.fixture(scope="module")
def models():
    return [make_conv_model("qcdq", act_bits=1, weight_bits=1, in_ch=64, out_ch=32),
            make_dense_model("qcdq", act_bits=2, weight_bits=1, in_features=256,
                             out_features=32)]


@pytest.mark.parametrize("spec", ["x86:haswell", "x86:znver3", "x86:skylake-avx512",
                                  "x86:icelake-server", "x86:znver4", "arm_cpu",
                                  "arm_cpu:rasp5", "arm_cpu:rasp3b"])
def test_layers_compile_to_the_targets_popcount(spec, models):
    target = resolve_target(spec)
    want, never = _popcount_instruction(target)
    for model in models:
        art = tvm_qnn.compile(model, target=spec)
        assert all(row["bitserial"] for row in art.layers)
        asm = art.assembly()
        assert re.search(want, asm), f"{spec}: no {want} in the generated code"
        assert never is None or not re.search(never, asm), f"{spec}: {never} found"
        if target.name == "x86" and not target.has_vpopcntdq and "avx512" not in spec:
            assert "%zmm" not in asm  # AVX2 CPUs have no 512-bit registers


def test_expectations_follow_the_cpu_class():
    assert resolve_target("x86:znver4").has_vpopcntdq
    assert resolve_target("x86:icelake-server").has_vpopcntdq
    assert not resolve_target("x86:skylake-avx512").has_vpopcntdq  # AVX-512 without it
    assert not resolve_target("x86:haswell").has_vpopcntdq
    # From LLVM's features of the CPU: Cooper Lake has VNNI and BF16 but no VPOPCNTDQ.
    assert not resolve_target("x86:cooperlake").has_vpopcntdq
    assert resolve_target("x86:graniterapids-d").has_vpopcntdq


def _small_workspace_allocations(asm: str) -> list[int]:
    """The sizes (bytes) of the TVMBackendAllocWorkspace calls under 1 KiB whose size is a
    constant set just before the call (x86-64: third argument, %edx / %rdx)."""
    lines = asm.splitlines()
    sizes = []
    for k, line in enumerate(lines):
        if "TVMBackendAllocWorkspace" in line and "call" not in line:  # the address load
            for before in reversed(lines[max(0, k - 8):k + 8]):
                found = re.search(r"\bmov[lq]\s+\$(\d+), %[er]dx\b", before)
                if found:
                    sizes.append(int(found.group(1)))
                    break
    return [s for s in sizes if s < 1024]


@pytest.mark.parametrize("spec", ["x86:haswell", "x86:znver4"])
def test_register_tiles_are_not_in_the_workspace_heap(spec):
    """The branch sums, byte-word chunks and dot-step accumulators live on the stack (in
    registers once LLVM promotes them): TVM puts a "local" buffer in heap workspace, where
    every accumulation is a load and a store (target/cpu/schedule.py: TILE_SCOPE)."""
    kernels = set()
    for model in (make_conv_model("qcdq", act_bits=1, weight_bits=1, in_ch=64, out_ch=32),
                  make_conv_model("qcdq", act_bits=8, weight_bits=4, in_ch=3, out_ch=32)):
        art = tvm_qnn.compile(model, target=spec, threads=2)  # parallel kernels too
        kernels |= {row["kernel"] for row in art.layers}
        assert _small_workspace_allocations(art.assembly()) == [], spec
    assert {"lut", "int8-dot"} <= kernels if spec == "x86:haswell" else "bit-serial" in kernels
