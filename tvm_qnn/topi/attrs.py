# SPDX-License-Identifier: Apache-2.0
"""The names tvm_qnn's kernels carry, in one place: PrimFunc attributes and block names.

The rewrite writes them, the schedules, the tuner and the reports read them.
"""

# PrimFunc attributes of a layer kernel.
KERNEL_ATTR = "tvm_qnn.kernel"  # "conv2d" or "dense": a bit-serial (or integer) layer kernel
LAYER_ATTR = "tvm_qnn.layer"  # the layer's name in the model
BITS_ATTR = "tvm_qnn.bits"  # e.g. "W2A2"
SCHEDULED_ATTR = "tvm_qnn.scheduled"  # set once ScheduleBitserial scheduled the kernel
PACK_CL_ATTR = "tvm_qnn.pack_channels_last"  # the channels-last bit-plane pack between layers

# Block attribute of the epilogue: "NHWC" when the output is written channels-last.
LAYOUT_ATTR = "tvm_qnn.layout"
# Block attribute of an int8-dot kernel's accumulation: 4-channel groups per dot step.
DOT8_GROUPS_ATTR = "tvm_qnn.dot8_groups"
DOT8_WINDOW_ATTR = "tvm_qnn.dot8_window"  # the int8-dot input stage gathers folded windows
# Block attribute of a table-lookup kernel's chunk block (its sums are byte shuffles): how
# many dims its output channels take, 1, or 2 where a byte pairs two channels' nibbles.
LUT_ATTR = "tvm_qnn.lut"
# Block attribute of an input stage the schedule inlines into the kernel's loads.
INLINE_ATTR = "tvm_qnn.inline"

# Block names the target schedules look for.
PACK_BLOCK = "bitpack"
BRANCH_BLOCK = "branch_popcount"
CHUNK_BLOCK = "branch_chunk"  # byte words: popcounts summed in uint8 lanes, a chunk at a time
ROWSUM_BLOCK = "act_popcount"
INT_INPUT_BLOCK = "int_input"  # integer kernel: padded, zero-point-shifted input codes
DOT8_INPUT_BLOCK = "dot8_input"  # u8 x s8 dot kernel: padded NHWC bytes, 4-channel groups
LUT_TABLE_BLOCK = "lut_tables"  # table-lookup kernel: a table per input nibble
EPILOGUE_BLOCK = "epilogue"



def block_names(func) -> tuple[str, ...]:
    """The names of the top-level blocks of a layer PrimFunc, in order (e.g. to tell the
    integer kernel by :data:`INT_INPUT_BLOCK`)."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    return tuple(sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root")))
