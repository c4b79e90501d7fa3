// SPDX-License-Identifier: Apache-2.0
// Functional + cycle simulator of the tvm_qnn bit-serial accelerator (docs/accelerator.md).
//
// This core is plain C++17 with no tvm-ffi dependency so the C++ unit tests build without it;
// ffi_api.cc is the only file that talks to tvm-ffi.
#ifndef TVM_QNN_ACCEL_SIM_H_
#define TVM_QNN_ACCEL_SIM_H_

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace tvm_qnn {
namespace accel {

// Opcodes, memory types and ALU ops: the numbers are the encoding (docs/accelerator.md).
enum Opcode : uint32_t { kLoad = 0, kStore = 1, kGemm = 2, kAlu = 3, kFinish = 4 };
enum MemType : uint32_t { kMemUop = 0, kMemWgt = 1, kMemInp = 2, kMemAcc = 3 };
enum AluOp : uint32_t { kAluMin = 0, kAluMax = 1, kAluAdd = 2, kAluMul = 3, kAluShr = 4,
                        kAluMov = 5 };
enum GemmMode : uint32_t { kGemmXor = 0, kGemmAnd = 1 };

constexpr int kInsnBytes = 16;
constexpr int kUopBytes = 8;
constexpr int kMaxBits = 8;

// Hardware parameters, the keys of config.json (all integers except clock_mhz).
struct Config {
  int64_t batch = 1;
  int64_t block_in = 64;   // bits of one bit-plane row = input channels per GEMM step
  int64_t block_out = 16;  // output channels per GEMM step
  int64_t inp_buff_bytes = 32 * 1024;
  int64_t wgt_buff_bytes = 256 * 1024;
  int64_t acc_buff_bytes = 128 * 1024;
  int64_t uop_buff_bytes = 32 * 1024;
  int64_t dram_bytes_per_cycle = 8;
  int64_t dram_latency_cycles = 32;
  int64_t gemm_pipeline_cycles = 4;
  int64_t alu_pipeline_cycles = 4;
  int64_t token_queue_depth = 64;
  double clock_mhz = 100.0;

  // Unknown keys are ignored (config.json carries a name and comments); bad values throw.
  static Config FromMap(const std::map<std::string, double>& kv);
  void Validate() const;

  int64_t inp_entry_bytes() const { return batch * block_in / 8; }
  int64_t wgt_entry_bytes() const { return block_out * block_in / 8; }
  int64_t acc_entry_bytes() const { return batch * block_out * 4; }
  int64_t inp_entries() const { return inp_buff_bytes / inp_entry_bytes(); }
  int64_t wgt_entries() const { return wgt_buff_bytes / wgt_entry_bytes(); }
  int64_t acc_entries() const { return acc_buff_bytes / acc_entry_bytes(); }
  int64_t uop_entries() const { return uop_buff_bytes / kUopBytes; }
};

// Every error the simulator reports; `kind` selects the Python exception class.
class SimError : public std::runtime_error {
 public:
  enum Kind { kProgram, kDeadlock, kBudget, kConfig };
  SimError(Kind kind, const std::string& msg) : std::runtime_error(msg), kind(kind) {}
  Kind kind;
};

struct RunResult {
  std::vector<uint8_t> dram;
  std::string stats_json;  // {"cycles": ..., "load": {...}, ...}; "trace": [...] on request
};

// One GEMM step as the compute module issues it: accumulator, input and weight entries.
struct GemmStep {
  int64_t acc, inp, wgt;
};

// A verilated GEMM core (src/accel/rtl/gemm_core.v) in a shared library with the C interface of
// gemm_rtl.h, opened with dlopen: the simulator does not link verilator. Runs GEMM instructions
// plane pair by plane pair through the RTL, with the accumulator SRAM modelled here.
class RtlGemm {
 public:
  // Throws SimError(kConfig) if the library cannot be loaded or was built for other parameters.
  RtlGemm(const std::string& path, const Config& cfg);
  ~RtlGemm();
  RtlGemm(const RtlGemm&) = delete;
  RtlGemm& operator=(const RtlGemm&) = delete;

  // Feeds the steps' plane pairs (a_bits * w_bits per step, one per clock; one per step for a
  // reset), updates `acc` through the core's SRAM ports and returns the clock cycles the core was
  // busy: from the first plane pair until its last write reached the SRAM.
  int64_t Run(const std::vector<GemmStep>& steps, bool reset, bool use_and, int64_t a_bits,
              int64_t w_bits, const uint64_t* inp, const uint64_t* wgt, int32_t* acc);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Runs `program` (n_insns * 16 bytes) against `dram`, returns the DRAM after the run and stats.
// Stops with SimError before any instruction that would push the clock past max_cycles.
// A non-empty `gemm_rtl_lib` runs every GEMM instruction through that RTL core (RtlGemm), whose
// clock cycles then are the instructions' cycles.
RunResult Run(const Config& cfg, const uint8_t* program, size_t program_bytes,
              std::vector<uint8_t> dram, bool trace, int64_t max_cycles,
              const std::string& gemm_rtl_lib = "");

// The instruction and micro-op field layouts as JSON: the single source of truth the Python
// assembler (tvm_qnn.bitserial_accel.isa) builds its encoder from.
std::string IsaJson();

// A decoded 128-bit instruction: field accessors by name, for the assembler tests.
struct Field {
  const char* name;
  int word;   // 0 or 1: which little-endian 64-bit word
  int lo;     // first bit inside the word
  int width;
  bool is_signed;
};
const std::vector<Field>& FieldsOf(uint32_t opcode);
const std::vector<Field>& UopFields();

}  // namespace accel
}  // namespace tvm_qnn

#endif  // TVM_QNN_ACCEL_SIM_H_
