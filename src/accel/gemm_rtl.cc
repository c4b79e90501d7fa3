// SPDX-License-Identifier: Apache-2.0
// Co-simulation: GEMM instructions through the verilated gemm_core (docs/accelerator_rtl.md).
// This side is the compute module's GEMM controller (plane-pair sequencing) and the accumulator
// SRAM: synchronous read (data one cycle after acc_rd_en), read-first, one write port.
#include <dlfcn.h>

#include <cstring>
#include <vector>

#include "gemm_rtl.h"
#include "sim.h"

namespace tvm_qnn {
namespace accel {

struct RtlGemm::Impl {
  void* dl = nullptr;
  void* core = nullptr;
  TvmQnnGemmRtlInfo info{};
  TvmQnnGemmRtlDeleteFn del = nullptr;
  TvmQnnGemmRtlCycleFn cycle = nullptr;
  int64_t lanes = 0, inp_words = 0, wgt_words = 0, acc_entries = 0;
};

namespace {

[[noreturn]] void ConfigFail(const std::string& what) {
  throw SimError(SimError::kConfig, "RTL GEMM core: " + what);
}

template <typename Fn>
Fn Symbol(void* dl, const char* name, const std::string& path) {
  void* p = dlsym(dl, name);
  if (!p) ConfigFail(path + " has no symbol " + name + " (not a gemm_rtl.h library?)");
  return reinterpret_cast<Fn>(p);
}

}  // namespace

RtlGemm::RtlGemm(const std::string& path, const Config& cfg) : impl_(new Impl) {
  Impl& m = *impl_;
  // RTLD_LOCAL: each library keeps its own verilator runtime symbols.
  m.dl = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!m.dl) ConfigFail(std::string("cannot load ") + dlerror());
  Symbol<TvmQnnGemmRtlInfoFn>(m.dl, "tvm_qnn_gemm_rtl_info", path)(&m.info);
  const TvmQnnGemmRtlInfo& i = m.info;
  if (i.abi != TVM_QNN_GEMM_RTL_ABI || i.batch != cfg.batch || i.block_in != cfg.block_in ||
      i.block_out != cfg.block_out || i.pipe != cfg.gemm_pipeline_cycles || i.acc_bits != 32) {
    dlclose(m.dl);
    m.dl = nullptr;
    ConfigFail(path + " was built for batch=" + std::to_string(i.batch) + " block_in=" +
               std::to_string(i.block_in) + " block_out=" + std::to_string(i.block_out) +
               " pipe=" + std::to_string(i.pipe) + " (abi " + std::to_string(i.abi) +
               "), not this configuration's " + std::to_string(cfg.batch) + "x" +
               std::to_string(cfg.block_in) + "x" + std::to_string(cfg.block_out) +
               " pipe=" + std::to_string(cfg.gemm_pipeline_cycles));
  }
  if (cfg.acc_entries() > (int64_t{1} << i.addr_bits)) ConfigFail("accumulator address too wide");
  m.del = Symbol<TvmQnnGemmRtlDeleteFn>(m.dl, "tvm_qnn_gemm_rtl_delete", path);
  m.cycle = Symbol<TvmQnnGemmRtlCycleFn>(m.dl, "tvm_qnn_gemm_rtl_cycle", path);
  m.core = Symbol<TvmQnnGemmRtlNewFn>(m.dl, "tvm_qnn_gemm_rtl_new", path)();
  m.lanes = cfg.batch * cfg.block_out;
  m.inp_words = cfg.batch * cfg.block_in / 64;
  m.wgt_words = cfg.block_out * cfg.block_in / 64;
  m.acc_entries = cfg.acc_entries();
}

RtlGemm::~RtlGemm() {
  if (impl_->core) impl_->del(impl_->core);
  if (impl_->dl) dlclose(impl_->dl);
}

int64_t RtlGemm::Run(const std::vector<GemmStep>& steps, bool reset, bool use_and,
                     int64_t a_bits, int64_t w_bits, const uint64_t* inp, const uint64_t* wgt,
                     int32_t* acc) {
  Impl& m = *impl_;
  std::vector<int32_t> rd_data(m.lanes, 0), wr_data(m.lanes, 0);
  TvmQnnGemmRtlIn in{};
  TvmQnnGemmRtlOut out{};
  in.acc_rd_data = rd_data.data();
  in.mode = use_and ? 1 : 0;
  out.acc_wr_data = wr_data.data();
  int64_t cycles = 0;

  // One clock: drive, sample, edge; then the SRAM acts on what it saw at that edge.
  auto clock = [&]() {
    m.cycle(m.core, &in, &out);
    if (out.acc_rd_en) {
      if (out.acc_rd_addr >= m.acc_entries) ConfigFail("read of row " + std::to_string(out.acc_rd_addr));
      std::memcpy(rd_data.data(), acc + out.acc_rd_addr * m.lanes, m.lanes * 4);
    }
    if (out.acc_wr_en) {
      if (out.acc_wr_addr >= m.acc_entries) ConfigFail("write of row " + std::to_string(out.acc_wr_addr));
      std::memcpy(acc + out.acc_wr_addr * m.lanes, wr_data.data(), m.lanes * 4);
    }
  };

  in.valid = 1;
  const int64_t per_step = reset ? 1 : a_bits * w_bits;
  for (const GemmStep& s : steps) {
    in.addr = static_cast<uint32_t>(s.acc);
    for (int64_t k = 0; k < per_step; ++k) {
      const int64_t i = k / w_bits, j = k % w_bits;  // activation plane outer, as the model sums
      in.first = k == 0;
      in.last = k == per_step - 1;
      in.reset = reset;
      in.shift = reset ? 0 : static_cast<uint32_t>(i + j);
      in.inp = reset ? nullptr : reinterpret_cast<const uint8_t*>(inp + (s.inp + i) * m.inp_words);
      in.wgt = reset ? nullptr : reinterpret_cast<const uint8_t*>(wgt + (s.wgt + j) * m.wgt_words);
      clock();
      ++cycles;
    }
  }
  // Drain: count the cycles until the core reports nothing in flight (before an edge).
  in = TvmQnnGemmRtlIn{};
  in.acc_rd_data = rd_data.data();
  for (int64_t guard = 0;; ++guard) {
    clock();
    if (out.idle) break;
    ++cycles;
    if (guard > 1000) ConfigFail("the core did not drain within 1000 cycles");
  }
  return cycles;
}

}  // namespace accel
}  // namespace tvm_qnn
