// SPDX-License-Identifier: Apache-2.0
// C interface (src/accel/gemm_rtl.h) of the verilated gemm_core. Built by tvm_qnn.bitserial_accel.rtl with
// -DGEMM_BATCH=... matching the verilator -G parameters, linked with the model into one .so.
#include <cstring>

#include "Vgemm_core.h"
#include "gemm_rtl.h"
#include "verilated.h"

namespace {

// Top-level ports are integers up to 64 bits and VlWide word arrays above; entries are bytes.
template <typename T>
void Put(T* port, const void* src, size_t bytes) {
  T v = 0;
  std::memcpy(&v, src, bytes);
  *port = v;
}
template <std::size_t N>
void Put(VlWide<N>* port, const void* src, size_t bytes) {
  std::memcpy(port->data(), src, bytes);
}
template <typename T>
void Get(const T& port, void* dst, size_t bytes) {
  std::memcpy(dst, &port, bytes);
}
template <std::size_t N>
void Get(const VlWide<N>& port, void* dst, size_t bytes) {
  std::memcpy(dst, port.data(), bytes);
}

constexpr size_t kInpBytes = GEMM_BATCH * GEMM_BLOCK_IN / 8;
constexpr size_t kWgtBytes = GEMM_BLOCK_OUT * GEMM_BLOCK_IN / 8;
constexpr size_t kAccBytes = GEMM_BATCH * GEMM_BLOCK_OUT * 4;

struct Core {
  VerilatedContext ctx;
  Vgemm_core* top;
  Core() : top(new Vgemm_core(&ctx, "gemm_core")) {
    top->clk = 0;
    top->rst = 1;
    top->in_valid = 0;
    for (int i = 0; i < 2; ++i) Edge();
    top->rst = 0;
    top->eval();
  }
  ~Core() {
    top->final();
    delete top;
  }
  void Edge() {
    top->clk = 1;
    top->eval();
    top->clk = 0;
    top->eval();
  }
};

}  // namespace

extern "C" {

void tvm_qnn_gemm_rtl_info(TvmQnnGemmRtlInfo* info) {
  info->abi = TVM_QNN_GEMM_RTL_ABI;
  info->batch = GEMM_BATCH;
  info->block_in = GEMM_BLOCK_IN;
  info->block_out = GEMM_BLOCK_OUT;
  info->acc_bits = 32;
  info->addr_bits = 16;
  info->pipe = GEMM_PIPE;
}

void* tvm_qnn_gemm_rtl_new(void) { return new Core(); }

void tvm_qnn_gemm_rtl_delete(void* core) { delete static_cast<Core*>(core); }

void tvm_qnn_gemm_rtl_cycle(void* handle, const TvmQnnGemmRtlIn* in, TvmQnnGemmRtlOut* out) {
  Core* core = static_cast<Core*>(handle);
  Vgemm_core* top = core->top;
  top->in_valid = in->valid;
  top->in_first = in->first;
  top->in_last = in->last;
  top->in_reset = in->reset;
  top->in_mode = in->mode;
  top->in_shift = in->shift;
  top->in_addr = in->addr;
  if (in->valid) {
    static const uint8_t kZeros[kWgtBytes > kInpBytes ? kWgtBytes : kInpBytes] = {};
    Put(&top->in_inp, in->inp ? in->inp : kZeros, kInpBytes);
    Put(&top->in_wgt, in->wgt ? in->wgt : kZeros, kWgtBytes);
  }
  Put(&top->acc_rd_data, in->acc_rd_data, kAccBytes);
  top->eval();
  out->acc_rd_en = top->acc_rd_en;
  out->acc_rd_addr = top->acc_rd_addr;
  out->acc_wr_en = top->acc_wr_en;
  out->acc_wr_addr = top->acc_wr_addr;
  out->idle = top->idle;
  Get(top->acc_wr_data, out->acc_wr_data, kAccBytes);
  core->Edge();
}

}  // extern "C"
