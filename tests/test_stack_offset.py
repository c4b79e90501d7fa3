# SPDX-License-Identifier: Apache-2.0
"""``tvm_qnn.runtime.stack_offset``: a function run deeper in the C stack, by a fixed amount
per padding argument, so that timings can be repeated at several stack offsets."""

import ctypes
import platform

import pytest

from tvm_qnn.runtime.stack_offset import MAX_WORDS, STACK_DEPTHS, call_at_stack_depth

# glibc x86-64: ucontext_t's gregs start at byte 40, and RSP is register 15 of them.
_RSP_OFFSET = 40 + 15 * 8


def _stack_pointer() -> int:
    """This call's stack pointer, as ``getcontext`` records it."""
    context = ctypes.create_string_buffer(4096)
    assert ctypes.CDLL(None).getcontext(context) == 0
    return ctypes.c_uint64.from_buffer(context, _RSP_OFFSET).value


@pytest.fixture(scope="module")
def glibc_x86_64():
    if platform.machine() != "x86_64" or platform.libc_ver()[0] != "glibc":
        pytest.skip("reads the stack pointer through glibc's x86-64 ucontext_t")


def test_padding_arguments_move_the_stack_in_proportion(glibc_x86_64):
    base = call_at_stack_depth(_stack_pointer, 0)
    shifts = [base - call_at_stack_depth(_stack_pointer, words) for words in range(0, 65, 8)]
    step = shifts[1] // 8
    assert step >= 8 and shifts == [step * words for words in range(0, 65, 8)]
    # The same depth twice is the same stack: a depth is a place, not noise.
    assert call_at_stack_depth(_stack_pointer, 36) == call_at_stack_depth(_stack_pointer, 36)


def test_the_timing_depths_spread_over_a_page(glibc_x86_64):
    """The depths a re-time uses lie at least 192 bytes apart within each KiB, so that one
    band of aliasing offsets (128-256 bytes per KiB on a Zen 4) cannot hold more than two."""
    # Measured from one place: a call from inside a C function (sorted, a generator) starts
    # deeper than one from the test's own frame.
    pointers = [call_at_stack_depth(_stack_pointer, w) for w in STACK_DEPTHS]
    within_kib = sorted((pointers[0] - p) % 1024 for p in pointers)
    gaps = [b - a for a, b in zip(within_kib, within_kib[1:] + [within_kib[0] + 1024],
                                  strict=True)]
    assert min(gaps) >= 192, within_kib


def test_values_and_errors_come_back():
    assert call_at_stack_depth(lambda: 42, 5) == 42

    def fails():
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        call_at_stack_depth(fails, 3)
    with pytest.raises(ValueError, match="padding arguments"):
        call_at_stack_depth(lambda: None, MAX_WORDS + 1)


def test_a_timed_kernel_runs_at_the_moved_depth(glibc_x86_64):
    """What the re-time relies on: TVM's time evaluator runs a compiled kernel (its first
    parallel task included) on the calling thread, so the kernel's frame moves too."""
    import numpy as np
    import tvm
    from tvm.script import tirx as T

    seen = []
    tvm.register_global_func("tvm_qnn.test.stack_pointer",
                             lambda: seen.append(_stack_pointer()), override=True)

    @T.prim_func
    def kernel(out: T.Buffer((1,), "int64")):
        T.func_attr({"global_symbol": "main"})
        for i in T.parallel(1):
            T.evaluate(T.call_packed("tvm_qnn.test.stack_pointer"))
            out[i] = T.int64(1)

    lib = tvm.compile(kernel, {"kind": "llvm"}).mod
    out = tvm.runtime.tensor(np.zeros(1, "int64"), tvm.cpu())

    def timed():
        lib.time_evaluator("main", tvm.cpu(), number=1, repeat=1)(out)
        return seen[-1]

    pointers = [call_at_stack_depth(timed, w) for w in STACK_DEPTHS]
    plain = [call_at_stack_depth(_stack_pointer, w) for w in STACK_DEPTHS]
    assert [pointers[0] - p for p in pointers] == [plain[0] - p for p in plain]
    assert len(set(pointers)) == len(STACK_DEPTHS)
