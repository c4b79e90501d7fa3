// SPDX-License-Identifier: Apache-2.0
// The accelerator simulator: decode, functional execution, cycle model. Semantics and the cycle
// model are specified in docs/accelerator.md; this file implements that text, section by section.
#include "sim.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <sstream>

namespace tvm_qnn {
namespace accel {

namespace {

// ---------------------------------------------------------------------------------------------
// Instruction layouts
// ---------------------------------------------------------------------------------------------
#define TVM_QNN_ACCEL_HEADER                                                        \
  {"opcode", 0, 0, 3, false}, {"pop_prev", 0, 3, 1, false}, {"pop_next", 0, 4, 1, false}, \
      {"push_prev", 0, 5, 1, false}, {"push_next", 0, 6, 1, false}

const std::vector<Field> kLoadFields = {
    TVM_QNN_ACCEL_HEADER,
    {"mem_type", 0, 7, 2, false},     {"planes", 0, 9, 4, false},
    {"pad_code", 0, 13, 8, false},    {"sram_base", 0, 21, 16, false},
    {"dram_base", 0, 37, 27, false},  {"y_size", 1, 0, 16, false},
    {"x_size", 1, 16, 16, false},     {"x_stride", 1, 32, 16, false},
    {"y_pad_0", 1, 48, 4, false},     {"y_pad_1", 1, 52, 4, false},
    {"x_pad_0", 1, 56, 4, false},     {"x_pad_1", 1, 60, 4, false},
};
const std::vector<Field> kStoreFields = {
    TVM_QNN_ACCEL_HEADER,
    {"mem_type", 0, 7, 2, false},     {"out_bytes_log2", 0, 9, 4, false},
    {"sram_base", 0, 21, 16, false},  {"dram_base", 0, 37, 27, false},
    {"y_size", 1, 0, 16, false},      {"x_size", 1, 16, 16, false},
    {"x_stride", 1, 32, 16, false},
};
const std::vector<Field> kGemmFields = {
    TVM_QNN_ACCEL_HEADER,
    {"reset", 0, 7, 1, false},           {"mode", 0, 8, 1, false},
    {"a_bits", 0, 9, 4, false},          {"w_bits", 0, 13, 4, false},
    {"uop_bgn", 0, 17, 12, false},       {"uop_end", 0, 29, 13, false},
    {"iter_out", 0, 42, 11, false},      {"iter_in", 0, 53, 11, false},
    {"dst_factor_out", 1, 0, 11, false}, {"dst_factor_in", 1, 11, 11, false},
    {"src_factor_out", 1, 22, 11, false}, {"src_factor_in", 1, 33, 11, false},
    {"wgt_factor_out", 1, 44, 10, false}, {"wgt_factor_in", 1, 54, 10, false},
};
const std::vector<Field> kAluFields = {
    TVM_QNN_ACCEL_HEADER,
    {"alu_op", 0, 7, 4, false},          {"use_imm", 0, 11, 1, false},
    {"uop_bgn", 0, 12, 12, false},       {"uop_end", 0, 24, 13, false},
    {"iter_out", 0, 37, 11, false},      {"iter_in", 0, 48, 11, false},
    {"dst_factor_out", 1, 0, 11, false}, {"dst_factor_in", 1, 11, 11, false},
    {"src_factor_out", 1, 22, 11, false}, {"src_factor_in", 1, 33, 11, false},
    {"imm", 1, 44, 20, true},
};
const std::vector<Field> kFinishFields = {TVM_QNN_ACCEL_HEADER};
const std::vector<Field> kUopFields = {
    {"acc", 0, 0, 16, false}, {"inp", 0, 16, 16, false}, {"wgt", 0, 32, 16, false}};
#undef TVM_QNN_ACCEL_HEADER

const char* kOpNames[] = {"LOAD", "STORE", "GEMM", "ALU", "FINISH"};
const char* kMemNames[] = {"UOP", "WGT", "INP", "ACC"};
const char* kAluNames[] = {"MIN", "MAX", "ADD", "MUL", "SHR", "MOV"};
const char* kModuleNames[] = {"load", "compute", "store"};
// Token queues, named producer2consumer.
const char* kQueueNames[] = {"load2compute", "compute2load", "compute2store", "store2compute"};
enum Module { kLoadModule = 0, kComputeModule = 1, kStoreModule = 2 };
enum Queue { kL2C = 0, kC2L = 1, kC2S = 2, kS2C = 3, kNoQueue = -1 };

uint64_t Mask(int width) { return width >= 64 ? ~0ULL : ((1ULL << width) - 1); }

int64_t GetField(const uint64_t* words, const Field& f) {
  uint64_t raw = (words[f.word] >> f.lo) & Mask(f.width);
  if (f.is_signed && (raw >> (f.width - 1)) & 1) {
    return static_cast<int64_t>(raw) - (int64_t{1} << f.width);
  }
  return static_cast<int64_t>(raw);
}

struct Insn {
  int64_t index = 0;
  uint32_t opcode = 0;
  Module module = kComputeModule;
  std::map<std::string, int64_t> f;
  int64_t operator[](const char* name) const { return f.at(name); }
  std::string Name() const {
    std::string s = kOpNames[opcode];
    if (opcode == kLoad || opcode == kStore) s += std::string(" ") + kMemNames[f.at("mem_type")];
    if (opcode == kAlu && f.at("alu_op") <= kAluMov) s += std::string(" ") + kAluNames[f.at("alu_op")];
    return s;
  }
};

std::string Where(const Insn& in) {
  return "instruction " + std::to_string(in.index) + " (" + in.Name() + "): ";
}

[[noreturn]] void Fail(const Insn& in, const std::string& what) {
  throw SimError(SimError::kProgram, Where(in) + what);
}

void CheckRange(const Insn& in, const char* buffer, int64_t first, int64_t count, int64_t size,
                const std::string& at = "") {
  if (first < 0 || count < 0 || first + count > size) {
    std::ostringstream os;
    os << buffer << " index " << (first < 0 ? first : first + count - 1) << " out of range [0, "
       << size << ")" << at;
    Fail(in, os.str());
  }
}

// Which module executes an instruction and which token queue each dependency flag names.
Module ModuleOf(uint32_t opcode, int64_t mem_type) {
  if (opcode == kLoad) {
    // As in VTA: micro-ops and accumulator preloads feed the compute module directly.
    return (mem_type == kMemInp || mem_type == kMemWgt) ? kLoadModule : kComputeModule;
  }
  return opcode == kStore ? kStoreModule : kComputeModule;
}

Insn Decode(const uint64_t* words, int64_t index) {
  Insn in;
  in.index = index;
  in.opcode = static_cast<uint32_t>(words[0] & 7);
  if (in.opcode > kFinish) {
    throw SimError(SimError::kProgram, "instruction " + std::to_string(index) +
                                           ": unknown opcode " + std::to_string(in.opcode));
  }
  const std::vector<Field>& fields = FieldsOf(in.opcode);
  uint64_t used[2] = {0, 0};
  for (const Field& fd : fields) {
    in.f[fd.name] = GetField(words, fd);
    used[fd.word] |= Mask(fd.width) << fd.lo;
  }
  in.module = ModuleOf(in.opcode, in.opcode <= kStore ? in["mem_type"] : 0);
  // Set reserved bits are almost always an encoder bug; refuse them rather than guess.
  for (int w = 0; w < 2; ++w) {
    if (words[w] & ~used[w]) {
      Fail(in, "reserved bits set in word " + std::to_string(w));
    }
  }
  if (in.module == kLoadModule && (in["pop_prev"] || in["push_prev"])) {
    Fail(in, "the load module has no previous module (pop_prev/push_prev must be 0)");
  }
  if (in.module == kStoreModule && (in["pop_next"] || in["push_next"])) {
    Fail(in, "the store module has no next module (pop_next/push_next must be 0)");
  }
  return in;
}

// ---------------------------------------------------------------------------------------------
// Minimal JSON writer for the statistics (keeps the core free of dependencies).
// ---------------------------------------------------------------------------------------------
class Json {
 public:
  Json& Begin() { Sep(); os_ << '{'; first_ = true; return *this; }
  Json& End() { os_ << '}'; first_ = false; return *this; }
  Json& BeginList() { Sep(); os_ << '['; first_ = true; return *this; }
  Json& EndList() { os_ << ']'; first_ = false; return *this; }
  Json& Key(const std::string& k) { Sep(); os_ << '"' << k << "\":"; first_ = true; return *this; }
  Json& Int(int64_t v) { Sep(); os_ << v; return *this; }
  Json& Num(double v) { Sep(); os_ << (std::isfinite(v) ? v : 0.0); return *this; }
  Json& Str(const std::string& v) { Sep(); os_ << '"' << v << '"'; return *this; }
  Json& KV(const std::string& k, int64_t v) { return Key(k).Int(v); }
  std::string str() const { return os_.str(); }

 private:
  void Sep() {
    if (!first_) os_ << ',';
    first_ = false;
  }
  std::ostringstream os_;
  bool first_ = true;
};

// ---------------------------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------------------------
struct ModuleStats {
  int64_t insns = 0, busy = 0, stall_token = 0, stall_dram = 0, time = 0;
};
struct QueueState {
  std::deque<int64_t> tokens;  // cycle at which each pending token becomes visible
  int64_t last_pop = 0;        // when the consumer last freed a slot
  int64_t pushes = 0, max_occupancy = 0, wait_cycles = 0;
};

class Machine {
 public:
  Machine(const Config& cfg, std::vector<uint8_t> dram, bool trace, int64_t max_cycles,
          RtlGemm* rtl)
      : cfg_(cfg), dram_(std::move(dram)), trace_(trace), max_cycles_(max_cycles), rtl_(rtl) {
    words_in_ = cfg.block_in / 64;
    inp_.assign(cfg.inp_entries() * cfg.batch * words_in_, 0);
    wgt_.assign(cfg.wgt_entries() * cfg.block_out * words_in_, 0);
    acc_.assign(cfg.acc_entries() * cfg.batch * cfg.block_out, 0);
    uop_.assign(cfg.uop_entries(), 0);
  }

  RunResult Run(const std::vector<Insn>& program) {
    std::vector<std::vector<const Insn*>> streams(3);
    for (const Insn& in : program) streams[in.module].push_back(&in);
    size_t next[3] = {0, 0, 0};
    size_t remaining = program.size();
    while (remaining > 0) {
      // Each module runs its own stream in order; of all modules whose next instruction has its
      // tokens, run the one that can start first, so shared DRAM is granted in time order.
      int best = -1;
      int64_t best_start = std::numeric_limits<int64_t>::max();
      int best_queue = kNoQueue;
      for (int m = 0; m < 3; ++m) {
        if (next[m] == streams[m].size()) continue;
        int64_t start;
        int wait_queue;
        if (!CanStart(*streams[m][next[m]], &start, &wait_queue)) continue;
        if (start < best_start) {
          best = m, best_start = start, best_queue = wait_queue;
        }
      }
      if (best < 0) ThrowDeadlock(streams, next);
      Execute(*streams[best][next[best]], best_start, best_queue);
      ++next[best];
      --remaining;
    }
    return Finish();
  }

 private:
  // Queues an instruction pops (pop) and pushes (push), from its module and flags.
  void Deps(const Insn& in, std::vector<int>* pop, std::vector<int>* push) const {
    switch (in.module) {
      case kLoadModule:
        if (in["pop_next"]) pop->push_back(kC2L);
        if (in["push_next"]) push->push_back(kL2C);
        break;
      case kComputeModule:
        if (in["pop_prev"]) pop->push_back(kL2C);
        if (in["pop_next"]) pop->push_back(kS2C);
        if (in["push_prev"]) push->push_back(kC2L);
        if (in["push_next"]) push->push_back(kC2S);
        break;
      case kStoreModule:
        if (in["pop_prev"]) pop->push_back(kC2S);
        if (in["push_prev"]) push->push_back(kS2C);
        break;
    }
  }

  bool CanStart(const Insn& in, int64_t* start, int* wait_queue) const {
    std::vector<int> pop, push;
    Deps(in, &pop, &push);
    int64_t t = stats_[in.module].time;
    *wait_queue = kNoQueue;
    for (int q : pop) {
      if (queues_[q].tokens.empty()) return false;
      if (queues_[q].tokens.front() > t) t = queues_[q].tokens.front(), *wait_queue = q;
    }
    for (int q : push) {
      // A full queue blocks the producer until its consumer pops (hardware FIFO back-pressure).
      if (static_cast<int64_t>(queues_[q].tokens.size()) >= cfg_.token_queue_depth) return false;
      if (queues_[q].last_pop > t) t = queues_[q].last_pop, *wait_queue = q;
    }
    *start = t;
    return true;
  }

  [[noreturn]] void ThrowDeadlock(const std::vector<std::vector<const Insn*>>& streams,
                                  const size_t* next) const {
    const Insn* first = nullptr;
    std::ostringstream why;
    for (int m = 0; m < 3; ++m) {
      if (next[m] == streams[m].size()) continue;
      const Insn& in = *streams[m][next[m]];
      if (!first || in.index < first->index) first = &in;
      std::vector<int> pop, push;
      Deps(in, &pop, &push);
      why << "; " << kModuleNames[m] << " module waits at instruction " << in.index << " ("
          << in.Name() << ")";
      for (int q : pop) {
        if (queues_[q].tokens.empty()) why << " to pop an empty " << kQueueNames[q] << " queue";
      }
      for (int q : push) {
        if (static_cast<int64_t>(queues_[q].tokens.size()) >= cfg_.token_queue_depth) {
          why << " to push onto a full " << kQueueNames[q] << " queue (depth "
              << cfg_.token_queue_depth << ")";
        }
      }
    }
    throw SimError(SimError::kDeadlock, "deadlock at instruction " + std::to_string(first->index) +
                                            ": no module can progress" + why.str());
  }

  void Execute(const Insn& in, int64_t start, int wait_queue) {
    ModuleStats& ms = stats_[in.module];
    std::vector<int> pop, push;
    Deps(in, &pop, &push);
    for (int q : pop) {
      queues_[q].tokens.pop_front();
      queues_[q].last_pop = start;
    }
    int64_t stall_token = start - ms.time;
    if (wait_queue != kNoQueue) queues_[wait_queue].wait_cycles += stall_token;

    int64_t dram_start = start, end = start;
    switch (in.opcode) {
      case kLoad: Load(in, start, &dram_start, &end); break;
      case kStore: Store(in, start, &dram_start, &end); break;
      case kGemm: end = start + Gemm(in, start); break;
      case kAlu: end = start + Alu(in, start); break;
      default: end = start + 1; break;  // FINISH
    }
    for (int q : push) {
      queues_[q].tokens.push_back(end);
      queues_[q].pushes++;
      queues_[q].max_occupancy =
          std::max<int64_t>(queues_[q].max_occupancy, queues_[q].tokens.size());
    }
    ms.insns++;
    ms.stall_token += stall_token;
    ms.stall_dram += dram_start - start;
    ms.busy += end - dram_start;
    ms.time = end;
    if (trace_) {
      trace_json_.Begin()
          .KV("index", in.index).Key("module").Str(kModuleNames[in.module])
          .Key("op").Str(in.Name()).KV("start", start).KV("end", end)
          .KV("stall_token", stall_token).KV("stall_dram", dram_start - start)
          .End();
    }
  }

  // Refuses to start an instruction that would pass the cycle budget: a runaway program must
  // end with an error, not keep the caller waiting.
  void CheckBudget(const Insn& in, int64_t start, int64_t cycles) const {
    if (start + cycles > max_cycles_) {
      throw SimError(SimError::kBudget,
                     Where(in) + "would run until cycle " + std::to_string(start + cycles) +
                         ", past the budget of max_cycles=" + std::to_string(max_cycles_));
    }
  }

  // DRAM time of a 2D transfer: one burst per row through the single shared channel, plus a
  // fixed latency per instruction that does not occupy the channel.
  void DramTransfer(const Insn& in, int64_t start, int64_t rows, int64_t row_bytes,
                    int64_t extra_cycles, int64_t* dram_start, int64_t* end) {
    int64_t beats_per_row = (row_bytes + cfg_.dram_bytes_per_cycle - 1) / cfg_.dram_bytes_per_cycle;
    int64_t beats = rows * beats_per_row;
    int64_t t0 = std::max(start, dram_free_);
    CheckBudget(in, t0, cfg_.dram_latency_cycles + beats + extra_cycles);
    dram_free_ = t0 + beats;
    dram_busy_ += beats;
    *dram_start = t0;
    *end = t0 + cfg_.dram_latency_cycles + beats + extra_cycles;
  }

  void CheckDram(const Insn& in, int64_t byte_addr, int64_t bytes, int64_t row) const {
    if (byte_addr < 0 || byte_addr + bytes > static_cast<int64_t>(dram_.size())) {
      std::ostringstream os;
      os << "DRAM bytes [" << byte_addr << ", " << byte_addr + bytes << ") of row " << row
         << " out of bounds (DRAM has " << dram_.size() << " bytes)";
      Fail(in, os.str());
    }
  }

  void Load(const Insn& in, int64_t start, int64_t* dram_start, int64_t* end) {
    int64_t mem = in["mem_type"], planes = in["planes"];
    int64_t y_size = in["y_size"], x_size = in["x_size"], x_stride = in["x_stride"];
    int64_t yp0 = in["y_pad_0"], yp1 = in["y_pad_1"], xp0 = in["x_pad_0"], xp1 = in["x_pad_1"];
    if (planes < 1 || planes > kMaxBits) Fail(in, "planes must be in [1, 8], got " + std::to_string(planes));
    if ((mem == kMemUop || mem == kMemAcc) && planes != 1) Fail(in, "UOP and ACC loads have planes=1");
    if (mem == kMemUop && (yp0 || yp1 || xp0 || xp1)) Fail(in, "UOP loads cannot pad");
    if (x_size > x_stride && y_size > 1) {
      Fail(in, "x_size " + std::to_string(x_size) + " > x_stride " + std::to_string(x_stride));
    }
    int64_t entry_bytes, entries;
    const char* buffer;
    uint8_t* sram;
    switch (mem) {
      case kMemInp: entry_bytes = cfg_.inp_entry_bytes(); entries = cfg_.inp_entries();
        buffer = "input buffer"; sram = reinterpret_cast<uint8_t*>(inp_.data()); break;
      case kMemWgt: entry_bytes = cfg_.wgt_entry_bytes(); entries = cfg_.wgt_entries();
        buffer = "weight buffer"; sram = reinterpret_cast<uint8_t*>(wgt_.data()); break;
      case kMemAcc: entry_bytes = cfg_.acc_entry_bytes(); entries = cfg_.acc_entries();
        buffer = "accumulator buffer"; sram = reinterpret_cast<uint8_t*>(acc_.data()); break;
      default: entry_bytes = kUopBytes; entries = cfg_.uop_entries();
        buffer = "micro-op cache"; sram = reinterpret_cast<uint8_t*>(uop_.data()); break;
    }
    int64_t elem_bytes = entry_bytes * planes;
    int64_t row_elems = xp0 + x_size + xp1, rows = yp0 + y_size + yp1;
    int64_t total_entries = rows * row_elems * planes;
    CheckRange(in, buffer, in["sram_base"], total_entries, entries);
    for (int64_t y = 0; y < y_size; ++y) {
      CheckDram(in, (in["dram_base"] + y * x_stride * planes) * entry_bytes, x_size * elem_bytes, y);
    }
    int64_t pad_entries = total_entries - y_size * x_size * planes;
    // Padded entries are written by the load module at one SRAM entry per cycle.
    DramTransfer(in, start, y_size, x_size * elem_bytes, pad_entries, dram_start, end);
    read_bytes_[mem] += y_size * x_size * elem_bytes;

    // Pad entry of plane p: all ones if bit p of pad_code is set (the planes of the code that
    // stands for zero, DESIGN.md §1 "Padding"); ACC pads hold the sign-extended 8-bit pad_code.
    std::vector<std::vector<uint8_t>> pad(planes, std::vector<uint8_t>(entry_bytes, 0));
    int64_t code = in["pad_code"];
    for (int64_t p = 0; p < planes; ++p) {
      if (mem == kMemAcc) {
        int32_t v = static_cast<int8_t>(code & 0xff);
        for (int64_t k = 0; k < entry_bytes / 4; ++k) std::memcpy(&pad[p][4 * k], &v, 4);
      } else if ((code >> p) & 1) {
        std::fill(pad[p].begin(), pad[p].end(), 0xff);
      }
    }
    const int64_t dram_base = in["dram_base"];
    uint8_t* dst = sram + in["sram_base"] * entry_bytes;
    for (int64_t y = 0; y < rows; ++y) {
      for (int64_t x = 0; x < row_elems; ++x, dst += elem_bytes) {
        int64_t sy = y - yp0, sx = x - xp0;
        if (sy < 0 || sy >= y_size || sx < 0 || sx >= x_size) {
          for (int64_t p = 0; p < planes; ++p) std::memcpy(dst + p * entry_bytes, pad[p].data(), entry_bytes);
        } else {
          int64_t src = (dram_base + (sy * x_stride + sx) * planes) * entry_bytes;
          std::memcpy(dst, dram_.data() + src, elem_bytes);
        }
      }
    }
  }

  void Store(const Insn& in, int64_t start, int64_t* dram_start, int64_t* end) {
    if (in["mem_type"] != kMemAcc) Fail(in, "STORE reads the accumulator buffer (mem_type=ACC)");
    int64_t log2 = in["out_bytes_log2"];
    if (log2 > 2) Fail(in, "out_bytes_log2 must be 0 (int8), 1 (int16) or 2 (int32)");
    int64_t out_bytes = int64_t{1} << log2;
    int64_t y_size = in["y_size"], x_size = in["x_size"], x_stride = in["x_stride"];
    if (x_size > x_stride && y_size > 1) Fail(in, "x_size > x_stride");
    int64_t lanes = cfg_.batch * cfg_.block_out;
    int64_t elem_bytes = lanes * out_bytes;
    CheckRange(in, "accumulator buffer", in["sram_base"], y_size * x_size, cfg_.acc_entries());
    for (int64_t y = 0; y < y_size; ++y) {
      CheckDram(in, (in["dram_base"] + y * x_stride) * elem_bytes, x_size * elem_bytes, y);
    }
    DramTransfer(in, start, y_size, x_size * elem_bytes, 0, dram_start, end);
    write_bytes_ += y_size * x_size * elem_bytes;
    const int32_t* src = acc_.data() + in["sram_base"] * lanes;
    for (int64_t y = 0; y < y_size; ++y) {
      uint8_t* dst = dram_.data() + (in["dram_base"] + y * x_stride) * elem_bytes;
      for (int64_t k = 0; k < x_size * lanes; ++k, ++src) {
        // Narrowing keeps the low bytes (two's complement): the ALU clamps first if it matters.
        uint32_t v = static_cast<uint32_t>(*src);
        std::memcpy(dst + k * out_bytes, &v, out_bytes);
      }
    }
  }

  struct Loop {
    int64_t uop_bgn, uop_end, iter_out, iter_in;
    int64_t dst_out, dst_in, src_out, src_in;
  };
  Loop LoopOf(const Insn& in) const {
    Loop l{in["uop_bgn"], in["uop_end"], in["iter_out"], in["iter_in"],
           in["dst_factor_out"], in["dst_factor_in"], in["src_factor_out"], in["src_factor_in"]};
    if (l.iter_out < 1 || l.iter_in < 1) Fail(in, "iter_out and iter_in must be >= 1");
    if (l.uop_bgn >= l.uop_end) {
      Fail(in, "empty micro-op range [" + std::to_string(l.uop_bgn) + ", " +
                   std::to_string(l.uop_end) + ")");
    }
    CheckRange(in, "micro-op cache", l.uop_bgn, l.uop_end - l.uop_bgn, cfg_.uop_entries());
    return l;
  }

  static std::string At(int64_t i0, int64_t i1, int64_t u) {
    return " at (iter_out=" + std::to_string(i0) + ", iter_in=" + std::to_string(i1) +
           ", uop=" + std::to_string(u) + ")";
  }

  int64_t Gemm(const Insn& in, int64_t start) {
    Loop l = LoopOf(in);
    int64_t a_bits = in["a_bits"], w_bits = in["w_bits"];
    bool reset = in["reset"];
    if (!reset && (a_bits < 1 || a_bits > kMaxBits || w_bits < 1 || w_bits > kMaxBits)) {
      Fail(in, "a_bits and w_bits must be in [1, 8], got " + std::to_string(a_bits) + ", " +
                   std::to_string(w_bits));
    }
    int64_t steps = l.iter_out * l.iter_in * (l.uop_end - l.uop_bgn);
    // One plane pair per cycle; a reset clears one accumulator entry per cycle.
    int64_t per_step = reset ? 1 : a_bits * w_bits;
    int64_t cycles = cfg_.gemm_pipeline_cycles + steps * per_step;
    CheckBudget(in, start, cycles);
    if (!reset) gemm_active_ += steps * per_step;

    const int64_t B = cfg_.batch, O = cfg_.block_out, W = words_in_;
    const int64_t wgt_out = in["wgt_factor_out"], wgt_in = in["wgt_factor_in"];
    const bool use_and = in["mode"] == kGemmAnd;
    std::vector<GemmStep> rtl_steps;  // co-simulation: the steps go to the RTL core instead
    for (int64_t i0 = 0; i0 < l.iter_out; ++i0) {
      for (int64_t i1 = 0; i1 < l.iter_in; ++i1) {
        for (int64_t u = l.uop_bgn; u < l.uop_end; ++u) {
          uint64_t uop = uop_[u];
          int64_t a = GetField(&uop, kUopFields[0]) + i0 * l.dst_out + i1 * l.dst_in;
          int64_t x = GetField(&uop, kUopFields[1]) + i0 * l.src_out + i1 * l.src_in;
          int64_t w = GetField(&uop, kUopFields[2]) + i0 * wgt_out + i1 * wgt_in;
          CheckRange(in, "accumulator buffer", a, 1, cfg_.acc_entries(), At(i0, i1, u));
          int32_t* acc = acc_.data() + a * B * O;
          if (rtl_) {
            if (!reset) {
              CheckRange(in, "input buffer", x, a_bits, cfg_.inp_entries(), At(i0, i1, u));
              CheckRange(in, "weight buffer", w, w_bits, cfg_.wgt_entries(), At(i0, i1, u));
            }
            rtl_steps.push_back(GemmStep{a, x, w});
            continue;
          }
          if (reset) {
            std::fill(acc, acc + B * O, 0);
            continue;
          }
          CheckRange(in, "input buffer", x, a_bits, cfg_.inp_entries(), At(i0, i1, u));
          CheckRange(in, "weight buffer", w, w_bits, cfg_.wgt_entries(), At(i0, i1, u));
          for (int64_t b = 0; b < B; ++b) {
            for (int64_t o = 0; o < O; ++o) {
              // P = sum_{i,j} 2^(i+j) popcount(A_i op B_j), shift-accumulated as in hardware.
              uint32_t sum = 0;
              for (int64_t i = 0; i < a_bits; ++i) {
                const uint64_t* ap = inp_.data() + ((x + i) * B + b) * W;
                for (int64_t j = 0; j < w_bits; ++j) {
                  const uint64_t* wp = wgt_.data() + ((w + j) * O + o) * W;
                  uint32_t pc = 0;
                  for (int64_t k = 0; k < W; ++k) {
                    pc += __builtin_popcountll(use_and ? (ap[k] & wp[k]) : (ap[k] ^ wp[k]));
                  }
                  sum += pc << (i + j);
                }
              }
              acc[b * O + o] = static_cast<int32_t>(static_cast<uint32_t>(acc[b * O + o]) + sum);
            }
          }
        }
      }
    }
    if (rtl_) {
      return rtl_->Run(rtl_steps, reset, use_and, a_bits, w_bits, inp_.data(), wgt_.data(),
                       acc_.data());
    }
    return cycles;
  }

  static int32_t AluApply(uint32_t op, int32_t x, int32_t y) {
    switch (op) {
      case kAluMin: return std::min(x, y);
      case kAluMax: return std::max(x, y);
      case kAluAdd: return static_cast<int32_t>(static_cast<uint32_t>(x) + static_cast<uint32_t>(y));
      case kAluMul: return static_cast<int32_t>(static_cast<uint32_t>(x) * static_cast<uint32_t>(y));
      case kAluShr: {
        // Arithmetic shift right by y; a negative y shifts left. |y| saturates at 31.
        int32_t s = std::max(-31, std::min(31, y));
        return s >= 0 ? (x >> s) : static_cast<int32_t>(static_cast<uint32_t>(x) << -s);
      }
      default: return y;  // MOV
    }
  }

  int64_t Alu(const Insn& in, int64_t start) {
    Loop l = LoopOf(in);
    uint32_t op = static_cast<uint32_t>(in["alu_op"]);
    if (op > kAluMov) Fail(in, "unknown alu_op " + std::to_string(op));
    bool use_imm = in["use_imm"];
    int64_t steps = l.iter_out * l.iter_in * (l.uop_end - l.uop_bgn);
    // A vector operand costs a second read of the single-ported accumulator SRAM.
    int64_t cycles = cfg_.alu_pipeline_cycles + steps * (use_imm ? 1 : 2);
    CheckBudget(in, start, cycles);
    alu_active_ += steps;
    const int64_t lanes = cfg_.batch * cfg_.block_out;
    const int32_t imm = static_cast<int32_t>(in["imm"]);
    for (int64_t i0 = 0; i0 < l.iter_out; ++i0) {
      for (int64_t i1 = 0; i1 < l.iter_in; ++i1) {
        for (int64_t u = l.uop_bgn; u < l.uop_end; ++u) {
          uint64_t uop = uop_[u];
          int64_t d = GetField(&uop, kUopFields[0]) + i0 * l.dst_out + i1 * l.dst_in;
          int64_t s = GetField(&uop, kUopFields[1]) + i0 * l.src_out + i1 * l.src_in;
          CheckRange(in, "accumulator buffer", d, 1, cfg_.acc_entries(), At(i0, i1, u));
          if (!use_imm) CheckRange(in, "accumulator buffer", s, 1, cfg_.acc_entries(), At(i0, i1, u));
          int32_t* dst = acc_.data() + d * lanes;
          const int32_t* src = acc_.data() + s * lanes;
          for (int64_t k = 0; k < lanes; ++k) dst[k] = AluApply(op, dst[k], use_imm ? imm : src[k]);
        }
      }
    }
    return cycles;
  }

  RunResult Finish() {
    int64_t total = 0;
    for (const ModuleStats& m : stats_) total = std::max(total, m.time);
    Json js;
    js.Begin().KV("cycles", total).Key("time_us").Num(total / cfg_.clock_mhz);
    for (int m = 0; m < 3; ++m) {
      const ModuleStats& s = stats_[m];
      js.Key(kModuleNames[m]).Begin().KV("insns", s.insns).KV("busy", s.busy)
          .KV("stall_token", s.stall_token).KV("stall_dram", s.stall_dram)
          .KV("idle", total - s.time).End();
    }
    int64_t macs = gemm_active_ * cfg_.batch * cfg_.block_out * cfg_.block_in;
    js.Key("gemm").Begin().KV("active_cycles", gemm_active_).KV("bit_macs", macs)
        .Key("utilization").Num(total ? static_cast<double>(gemm_active_) / total : 0.0).End();
    js.Key("alu").Begin().KV("active_steps", alu_active_).End();
    js.Key("dram").Begin().KV("read_bytes", read_bytes_[0] + read_bytes_[1] + read_bytes_[2] + read_bytes_[3])
        .KV("write_bytes", write_bytes_).KV("busy_cycles", dram_busy_)
        .Key("utilization").Num(total ? static_cast<double>(dram_busy_) / total : 0.0)
        .Key("read_bytes_by_type").Begin();
    for (int t = 0; t < 4; ++t) js.KV(kMemNames[t], read_bytes_[t]);
    js.End().End();
    js.Key("queues").Begin();
    for (int q = 0; q < 4; ++q) {
      js.Key(kQueueNames[q]).Begin().KV("pushes", queues_[q].pushes)
          .KV("max_occupancy", queues_[q].max_occupancy).KV("wait_cycles", queues_[q].wait_cycles)
          .KV("left", static_cast<int64_t>(queues_[q].tokens.size())).End();
    }
    js.End();
    std::string out = js.str();
    if (trace_) out += ",\"trace\":[" + trace_json_.str() + "]";
    out += "}";
    return RunResult{std::move(dram_), std::move(out)};
  }

  const Config& cfg_;
  std::vector<uint8_t> dram_;
  bool trace_;
  int64_t max_cycles_;
  RtlGemm* rtl_;  // not null: GEMM instructions run on the verilated core
  int64_t words_in_;
  std::vector<uint64_t> inp_, wgt_, uop_;
  std::vector<int32_t> acc_;
  ModuleStats stats_[3];
  QueueState queues_[4];
  int64_t dram_free_ = 0, dram_busy_ = 0, write_bytes_ = 0;
  int64_t read_bytes_[4] = {0, 0, 0, 0};
  int64_t gemm_active_ = 0, alu_active_ = 0;
  Json trace_json_;
};

void FieldsJson(Json* js, const std::vector<Field>& fields) {
  js->BeginList();
  for (const Field& f : fields) {
    js->Begin().Key("name").Str(f.name).KV("word", f.word).KV("lo", f.lo).KV("width", f.width)
        .KV("signed", f.is_signed).End();
  }
  js->EndList();
}

}  // namespace

const std::vector<Field>& FieldsOf(uint32_t opcode) {
  switch (opcode) {
    case kLoad: return kLoadFields;
    case kStore: return kStoreFields;
    case kGemm: return kGemmFields;
    case kAlu: return kAluFields;
    default: return kFinishFields;
  }
}

const std::vector<Field>& UopFields() { return kUopFields; }

Config Config::FromMap(const std::map<std::string, double>& kv) {
  Config c;
  std::map<std::string, int64_t*> ints = {
      {"batch", &c.batch}, {"block_in", &c.block_in}, {"block_out", &c.block_out},
      {"inp_buff_bytes", &c.inp_buff_bytes}, {"wgt_buff_bytes", &c.wgt_buff_bytes},
      {"acc_buff_bytes", &c.acc_buff_bytes}, {"uop_buff_bytes", &c.uop_buff_bytes},
      {"dram_bytes_per_cycle", &c.dram_bytes_per_cycle},
      {"dram_latency_cycles", &c.dram_latency_cycles},
      {"gemm_pipeline_cycles", &c.gemm_pipeline_cycles},
      {"alu_pipeline_cycles", &c.alu_pipeline_cycles},
      {"token_queue_depth", &c.token_queue_depth}};
  for (const auto& [key, value] : kv) {
    if (key == "clock_mhz") {
      c.clock_mhz = value;
    } else if (auto it = ints.find(key); it != ints.end()) {
      if (value != std::floor(value)) {
        throw SimError(SimError::kConfig, "config " + key + " must be an integer");
      }
      *it->second = static_cast<int64_t>(value);
    }
  }
  c.Validate();
  return c;
}

void Config::Validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw SimError(SimError::kConfig, "bad accelerator config: " + what);
  };
  need(batch >= 1, "batch must be >= 1");
  need(block_in >= 64 && block_in % 64 == 0, "block_in must be a positive multiple of 64");
  need(block_out >= 1, "block_out must be >= 1");
  need(inp_buff_bytes >= inp_entry_bytes(), "inp_buff_bytes smaller than one entry");
  need(wgt_buff_bytes >= wgt_entry_bytes(), "wgt_buff_bytes smaller than one entry");
  need(acc_buff_bytes >= acc_entry_bytes(), "acc_buff_bytes smaller than one entry");
  need(uop_buff_bytes >= kUopBytes, "uop_buff_bytes smaller than one micro-op");
  // Micro-op fields are 16 bits wide: larger buffers could not be addressed.
  need(inp_entries() <= 65536 && wgt_entries() <= 65536 && acc_entries() <= 65536,
       "a buffer has more than 65536 entries (micro-op index fields are 16 bits)");
  need(uop_entries() <= 4096, "uop_buff_bytes above 4096 micro-ops (uop_bgn is 12 bits)");
  need(dram_bytes_per_cycle >= 1, "dram_bytes_per_cycle must be >= 1");
  need(dram_latency_cycles >= 0 && gemm_pipeline_cycles >= 0 && alu_pipeline_cycles >= 0,
       "latencies must be >= 0");
  need(token_queue_depth >= 1, "token_queue_depth must be >= 1");
  need(clock_mhz > 0, "clock_mhz must be > 0");
}

RunResult Run(const Config& cfg, const uint8_t* program, size_t program_bytes,
              std::vector<uint8_t> dram, bool trace, int64_t max_cycles,
              const std::string& gemm_rtl_lib) {
  cfg.Validate();
  if (program_bytes % kInsnBytes != 0) {
    throw SimError(SimError::kProgram, "program size " + std::to_string(program_bytes) +
                                           " is not a multiple of 16 bytes");
  }
  std::vector<Insn> insns;
  insns.reserve(program_bytes / kInsnBytes);
  for (size_t i = 0; i < program_bytes / kInsnBytes; ++i) {
    uint64_t words[2];
    std::memcpy(words, program + i * kInsnBytes, kInsnBytes);  // little-endian host assumed
    insns.push_back(Decode(words, static_cast<int64_t>(i)));
  }
  std::unique_ptr<RtlGemm> rtl;
  if (!gemm_rtl_lib.empty()) rtl = std::make_unique<RtlGemm>(gemm_rtl_lib, cfg);
  Machine machine(cfg, std::move(dram), trace, max_cycles, rtl.get());
  return machine.Run(insns);
}

std::string IsaJson() {
  Json js;
  js.Begin().KV("insn_bytes", kInsnBytes).KV("uop_bytes", kUopBytes).KV("max_bits", kMaxBits);
  js.Key("opcodes").Begin();
  for (int i = 0; i <= static_cast<int>(kFinish); ++i) js.KV(kOpNames[i], i);
  js.End().Key("mem_types").Begin();
  for (int i = 0; i < 4; ++i) js.KV(kMemNames[i], i);
  js.End().Key("alu_ops").Begin();
  for (int i = 0; i <= static_cast<int>(kAluMov); ++i) js.KV(kAluNames[i], i);
  js.End().Key("gemm_modes").Begin().KV("XOR", kGemmXor).KV("AND", kGemmAnd).End();
  js.Key("formats").Begin();
  for (uint32_t op = 0; op <= kFinish; ++op) {
    js.Key(kOpNames[op]);
    FieldsJson(&js, FieldsOf(op));
  }
  js.End().Key("uop");
  FieldsJson(&js, kUopFields);
  js.End();
  return js.str();
}

}  // namespace accel
}  // namespace tvm_qnn
