# SPDX-License-Identifier: Apache-2.0
"""Assembler for the accelerator ISA (docs/accelerator.md).

The field layouts come from the C++ simulator (``isa()`` of the library), so the encoder and
the decoder cannot drift apart. Instructions are 128 bits (two little-endian 64-bit words),
micro-ops 64 bits.

Example: one 1-bit x 1-bit GEMM step (acc[0] += popcount(inp[0] xor wgt[0]) per output)::

    p = Program()
    p.load("UOP", sram_base=0, dram_base=0, x_size=1)
    p.load("INP", sram_base=0, dram_base=32, x_size=1, push_next=True)
    p.load("WGT", sram_base=0, dram_base=4, x_size=1, push_next=True)
    p.gemm(uop_bgn=0, uop_end=1, reset=True)
    p.gemm(uop_bgn=0, uop_end=1, pop_prev=True)
    p.gemm(uop_bgn=0, uop_end=1, pop_prev=True, push_next=True)
    p.store(sram_base=0, dram_base=64, x_size=1, pop_prev=True)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence

import numpy as np

from ._lib import library


@functools.lru_cache(maxsize=None)
def isa_description() -> dict:
    """The ISA description from the simulator: opcodes, memory types, ALU ops, field layouts."""
    return json.loads(library().isa())


def _name_to_code(table: str, value: int | str) -> int:
    if isinstance(value, str):
        codes = isa_description()[table]
        if value.upper() not in codes:
            raise ValueError(f"unknown {table[:-1]} {value!r}; one of {sorted(codes)}")
        return codes[value.upper()]
    return int(value)


def _pack(fields: list[dict], values: dict, what: str) -> tuple[int, int]:
    known = {f["name"]: f for f in fields}
    for name in values:
        if name not in known:
            raise ValueError(f"{what} has no field {name!r}; fields: {sorted(known)}")
    words = [0, 0]
    for name, value in values.items():
        f = known[name]
        v = int(value)
        lo, hi = (-(1 << (f["width"] - 1)), (1 << (f["width"] - 1)) - 1) if f["signed"] \
            else (0, (1 << f["width"]) - 1)
        if not lo <= v <= hi:
            raise ValueError(f"{what}.{name}={v} does not fit its {f['width']}-bit field "
                             f"[{lo}, {hi}]")
        words[f["word"]] |= (v & ((1 << f["width"]) - 1)) << f["lo"]
    return words[0], words[1]


def encode(opcode: int | str, **fields) -> bytes:
    """One 16-byte instruction from its opcode (``"GEMM"`` or 2) and named fields (others 0)."""
    op = _name_to_code("opcodes", opcode)
    name = next(k for k, v in isa_description()["opcodes"].items() if v == op)
    w0, w1 = _pack(isa_description()["formats"][name], {**fields, "opcode": op}, name)
    return w0.to_bytes(8, "little") + w1.to_bytes(8, "little")


def encode_uops(uops: Iterable[Sequence[int]]) -> np.ndarray:
    """Micro-ops ``(acc, inp, wgt)`` (ALU: ``(dst, src, 0)``) as uint8 bytes for DRAM."""
    fields = isa_description()["uop"]
    words = [_pack(fields, dict(zip(("acc", "inp", "wgt"), u, strict=True)), "uop")[0]
             for u in uops]
    return np.asarray(words, dtype="<u8").view(np.uint8)


def decode(program: bytes | Program) -> list[dict]:
    """Disassemble: one dict of named fields (plus ``"op"``) per instruction."""
    data = bytes(program)
    names = {v: k for k, v in isa_description()["opcodes"].items()}
    out = []
    for i in range(0, len(data), 16):
        words = (int.from_bytes(data[i:i + 8], "little"), int.from_bytes(data[i + 8:i + 16],
                                                                         "little"))
        op = names.get(words[0] & 7, f"OPCODE{words[0] & 7}")
        insn = {"op": op}
        for f in isa_description()["formats"].get(op, []):
            v = (words[f["word"]] >> f["lo"]) & ((1 << f["width"]) - 1)
            if f["signed"] and v >> (f["width"] - 1):
                v -= 1 << f["width"]
            insn[f["name"]] = v
        out.append(insn)
    return out


class Program:
    """An instruction stream under construction; ``bytes(program)`` is what the simulator runs.

    Dependency flags (``pop_prev``, ``pop_next``, ``push_prev``, ``push_next``) are keyword
    arguments of every method; "prev"/"next" are relative to the executing module
    (load -> compute -> store), as in VTA.
    """

    def __init__(self) -> None:
        self._insns: list[bytes] = []

    def __len__(self) -> int:
        return len(self._insns)

    def __bytes__(self) -> bytes:
        return b"".join(self._insns)

    def emit(self, opcode: int | str, **fields) -> int:
        """Append one instruction; return its index (what error messages refer to)."""
        self._insns.append(encode(opcode, **fields))
        return len(self._insns) - 1

    def load(self, mem: str | int, *, sram_base: int, dram_base: int, x_size: int,
             y_size: int = 1, x_stride: int | None = None, planes: int = 1,
             pad: tuple[int, int, int, int] = (0, 0, 0, 0), pad_code: int = 0, **deps) -> int:
        """DRAM -> SRAM 2D load of ``y_size`` rows of ``x_size`` elements of ``planes`` entries.

        ``dram_base``/``sram_base`` are in entries, ``x_stride`` (default ``x_size``) in
        elements; ``pad = (y_pad_0, y_pad_1, x_pad_0, x_pad_1)`` in elements, filled with the
        planes of ``pad_code`` (ACC: the sign-extended 8-bit ``pad_code``).
        """
        yp0, yp1, xp0, xp1 = pad
        return self.emit("LOAD", mem_type=_name_to_code("mem_types", mem), sram_base=sram_base,
                         dram_base=dram_base, x_size=x_size, y_size=y_size,
                         x_stride=x_size if x_stride is None else x_stride, planes=planes,
                         pad_code=pad_code, y_pad_0=yp0, y_pad_1=yp1, x_pad_0=xp0, x_pad_1=xp1,
                         **deps)

    def store(self, *, sram_base: int, dram_base: int, x_size: int, y_size: int = 1,
              x_stride: int | None = None, out_bytes: int = 4, **deps) -> int:
        """Accumulator -> DRAM 2D store, each int32 narrowed to its low ``out_bytes`` (1, 2, 4).

        ``dram_base`` and ``x_stride`` count output elements of batch x block_out x out_bytes.
        """
        log2 = {1: 0, 2: 1, 4: 2}.get(out_bytes)
        if log2 is None:
            raise ValueError(f"out_bytes must be 1, 2 or 4, got {out_bytes}")
        return self.emit("STORE", mem_type=isa_description()["mem_types"]["ACC"],
                         out_bytes_log2=log2,
                         sram_base=sram_base, dram_base=dram_base, x_size=x_size, y_size=y_size,
                         x_stride=x_size if x_stride is None else x_stride, **deps)

    def gemm(self, *, uop_bgn: int, uop_end: int, iter_out: int = 1, iter_in: int = 1,
             a_bits: int = 1, w_bits: int = 1, mode: str = "XOR", reset: bool = False,
             dst_factor: tuple[int, int] = (0, 0), src_factor: tuple[int, int] = (0, 0),
             wgt_factor: tuple[int, int] = (0, 0), **deps) -> int:
        """Bit-serial GEMM over micro-ops ``[uop_bgn, uop_end)`` in a two-level loop.

        Each step: ``acc[d] += sum_{i<a_bits, j<w_bits} 2^(i+j) popcount(inp[x+i] op wgt[w+j])``
        with ``op`` xor (``mode="XOR"``) or and (``"AND"``); ``reset`` zeroes ``acc[d]``.
        Factors are ``(outer, inner)`` index increments of the loop.
        """
        return self.emit("GEMM", uop_bgn=uop_bgn, uop_end=uop_end, iter_out=iter_out,
                         iter_in=iter_in, a_bits=a_bits, w_bits=w_bits,
                         mode=_name_to_code("gemm_modes", mode), reset=int(reset),
                         dst_factor_out=dst_factor[0], dst_factor_in=dst_factor[1],
                         src_factor_out=src_factor[0], src_factor_in=src_factor[1],
                         wgt_factor_out=wgt_factor[0], wgt_factor_in=wgt_factor[1], **deps)

    def alu(self, op: str | int, *, uop_bgn: int, uop_end: int, iter_out: int = 1,
            iter_in: int = 1, imm: int | None = None, dst_factor: tuple[int, int] = (0, 0),
            src_factor: tuple[int, int] = (0, 0), **deps) -> int:
        """Elementwise ``acc[dst] = op(acc[dst], imm or acc[src])`` over the micro-op loop.

        ``op``: MIN, MAX, ADD, MUL (int32, wrapping), SHR (arithmetic; negative shifts left),
        MOV. ``imm`` is a signed 20-bit immediate; without it the operand is ``acc[src]``.
        """
        return self.emit("ALU", alu_op=_name_to_code("alu_ops", op), use_imm=int(imm is not None),
                         imm=imm or 0, uop_bgn=uop_bgn, uop_end=uop_end, iter_out=iter_out,
                         iter_in=iter_in, dst_factor_out=dst_factor[0],
                         dst_factor_in=dst_factor[1], src_factor_out=src_factor[0],
                         src_factor_in=src_factor[1], **deps)

    def finish(self, **deps) -> int:
        """A compute-module no-op (1 cycle) that only carries dependency flags."""
        return self.emit("FINISH", **deps)
