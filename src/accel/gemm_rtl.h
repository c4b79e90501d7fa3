// SPDX-License-Identifier: Apache-2.0
// The pin-level C interface between the simulator and a verilated GEMM core
// (src/accel/rtl/gemm_core.v, docs/accelerator_rtl.md). The wrapper src/accel/rtl/gemm_core_capi.cc
// implements it in a shared library that tvm_qnn.bitserial_accel.rtl builds with verilator; the simulator
// dlopens that library for `gemm="rtl"` runs, so it never links verilator itself.
#ifndef TVM_QNN_ACCEL_GEMM_RTL_H_
#define TVM_QNN_ACCEL_GEMM_RTL_H_

#include <stdint.h>

#define TVM_QNN_GEMM_RTL_ABI 1

#ifdef __cplusplus
extern "C" {
#endif

// The parameters the core was verilated with.
typedef struct {
  int32_t abi;  // TVM_QNN_GEMM_RTL_ABI
  int32_t batch, block_in, block_out, acc_bits, addr_bits, pipe;
} TvmQnnGemmRtlInfo;

// Inputs of one clock cycle. Entries are byte images of the simulator's SRAM entries (lane k of a
// row is bit k%8 of byte k/8); they may be NULL when valid is 0.
typedef struct {
  uint32_t valid, first, last, reset, mode, shift, addr;
  const uint8_t* inp;          // batch * block_in / 8 bytes
  const uint8_t* wgt;          // block_out * block_in / 8 bytes
  const int32_t* acc_rd_data;  // batch * block_out words: the accumulator SRAM's read port
} TvmQnnGemmRtlIn;

// Outputs sampled before the clock edge (what the SRAM sees at that edge).
typedef struct {
  uint32_t acc_rd_en, acc_rd_addr, acc_wr_en, acc_wr_addr, idle;
  int32_t* acc_wr_data;  // the caller's buffer of batch * block_out words
} TvmQnnGemmRtlOut;

typedef void (*TvmQnnGemmRtlInfoFn)(TvmQnnGemmRtlInfo*);
typedef void* (*TvmQnnGemmRtlNewFn)(void);  // a core after reset
typedef void (*TvmQnnGemmRtlDeleteFn)(void*);
// Drive the inputs, sample the outputs, then one rising clock edge.
typedef void (*TvmQnnGemmRtlCycleFn)(void*, const TvmQnnGemmRtlIn*, TvmQnnGemmRtlOut*);

#ifdef __cplusplus
}
#endif

#endif  // TVM_QNN_ACCEL_GEMM_RTL_H_
