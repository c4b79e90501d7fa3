# SPDX-License-Identifier: Apache-2.0
"""The accelerator's hardware parameters (``config.json``, keys in docs/accelerator.md)."""

from __future__ import annotations

import dataclasses
import json
import os

from ..errors import ConfigError
from ._lib import library

DEFAULT_CONFIG_PATH = os.path.join(os.path.dirname(__file__), "config.json")
# A field's annotation -> the Python types a config.json value may have, and their name.
_FIELD_TYPES = {"str": ((str,), "a string"), "int": ((int,), "an integer"),
                "float": ((int, float), "a number")}


@dataclasses.dataclass(frozen=True)
class AccelConfig:
    """Block sizes, buffer sizes, DRAM bandwidth and clock of one accelerator instance.

    A hashable value object: tuning caches may key on it. Entry sizes follow from the blocks:
    an input entry is one bit-plane of ``batch`` x ``block_in`` activations, a weight entry one
    bit-plane of ``block_out`` x ``block_in`` weights, an accumulator entry ``batch`` x
    ``block_out`` int32.
    """

    name: str = "zynq7020-bitserial"
    batch: int = 1
    block_in: int = 64
    block_out: int = 16
    inp_buff_bytes: int = 32768
    wgt_buff_bytes: int = 262144
    acc_buff_bytes: int = 131072
    uop_buff_bytes: int = 32768
    dram_bytes_per_cycle: int = 8
    dram_latency_cycles: int = 32
    gemm_pipeline_cycles: int = 4
    alu_pipeline_cycles: int = 4
    token_queue_depth: int = 64
    clock_mhz: float = 100.0

    @classmethod
    def from_dict(cls, values: dict) -> AccelConfig:
        """Build from a dict such as a parsed config.json; unknown keys (comments) are ignored.

        Integral floats (``16.0``) count as integers, as the simulator reads them. Not checked:
        :meth:`validate` is.
        """
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        return cls(**{k: int(v) if fields[k] == "int" and isinstance(v, float) and v.is_integer()
                      else v for k, v in values.items() if k in fields})

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> AccelConfig:
        """Read and :meth:`validate` a config.json; without ``path`` the packaged default (a
        small Zynq board). A file that cannot be read, is not a JSON object or describes no
        valid accelerator is a :class:`~tvm_qnn.errors.ConfigError` naming it."""
        path = os.fspath(path or DEFAULT_CONFIG_PATH)
        try:
            with open(path, encoding="utf-8") as f:
                values = json.load(f)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ConfigError(f"accelerator config {path}: cannot read it "
                              f"({getattr(err, 'strerror', None) or err})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"accelerator config {path}: a JSON object of the keys in "
                              f"docs/accelerator.md is expected, not a {type(values).__name__}")
        try:
            return cls.from_dict(values).validate()
        except ConfigError as err:
            raise ConfigError(f"accelerator config {path}: {err}") from None

    def validate(self) -> AccelConfig:
        """This config, if the accelerator can be built with it; else a
        :class:`~tvm_qnn.errors.ConfigError` naming the parameter.

        The types are checked here; the hardware rules (block sizes, buffers holding an entry,
        16-bit micro-op fields) live once, in the simulator's ``Config::Validate``, which
        checks them before running the empty program.
        """
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kinds, what = _FIELD_TYPES[f.type]
            if not isinstance(value, kinds) or isinstance(value, bool):
                raise ConfigError(f"{f.name}={value!r}: expected {what}")
        library().run(self.to_json(), b"", b"", False, 1, "")  # the empty program
        return self

    def replace(self, **changes) -> AccelConfig:
        """A copy with some parameters changed, e.g. ``cfg.replace(block_out=32)``."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """The JSON the C++ simulator parses."""
        return json.dumps(dataclasses.asdict(self))

    @property
    def inp_entry_bytes(self) -> int:
        """Bytes of one input-buffer entry (one bit-plane of batch x block_in activations)."""
        return self.batch * self.block_in // 8

    @property
    def wgt_entry_bytes(self) -> int:
        """Bytes of one weight-buffer entry (one bit-plane of block_out x block_in weights)."""
        return self.block_out * self.block_in // 8

    @property
    def acc_entry_bytes(self) -> int:
        """Bytes of one accumulator entry (batch x block_out int32)."""
        return self.batch * self.block_out * 4

    @property
    def inp_entries(self) -> int:
        """Entries of the input buffer."""
        return self.inp_buff_bytes // self.inp_entry_bytes

    @property
    def wgt_entries(self) -> int:
        """Entries of the weight buffer."""
        return self.wgt_buff_bytes // self.wgt_entry_bytes

    @property
    def acc_entries(self) -> int:
        """Entries of the accumulator buffer."""
        return self.acc_buff_bytes // self.acc_entry_bytes

    @property
    def uop_entries(self) -> int:
        """Micro-ops the micro-op cache holds."""
        return self.uop_buff_bytes // 8

    @property
    def peak_bit_macs_per_cycle(self) -> int:
        """Binary multiply-accumulates the GEMM core does per cycle (one plane pair)."""
        return self.batch * self.block_in * self.block_out
