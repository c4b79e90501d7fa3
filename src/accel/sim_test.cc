// SPDX-License-Identifier: Apache-2.0
// C++ unit tests of the simulator core (no tvm-ffi). Run by ctest; tests/test_accel_sim.py builds
// and runs them. The random bit-exactness tests against numpy live in tests/test_accel_sim.py.
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "sim.h"

using namespace tvm_qnn::accel;  // NOLINT: test file

namespace {

int failures = 0;

#define EXPECT(cond)                                                              \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::cerr << __FILE__ << ":" << __LINE__ << ": EXPECT(" #cond ") failed\n"; \
      ++failures;                                                                 \
    }                                                                             \
  } while (0)

using Fields = std::map<std::string, int64_t>;

// Sets named fields of one instruction (or micro-op) with the layout tables of sim.h.
void Put(uint64_t* words, const std::vector<Field>& layout, const Fields& values) {
  for (const auto& [name, value] : values) {
    bool found = false;
    for (const Field& f : layout) {
      if (name != f.name) continue;
      uint64_t mask = f.width >= 64 ? ~0ULL : (1ULL << f.width) - 1;
      words[f.word] |= (static_cast<uint64_t>(value) & mask) << f.lo;
      found = true;
    }
    if (!found) {
      std::cerr << "no field " << name << "\n";
      std::abort();
    }
  }
}

struct Program {
  std::vector<uint8_t> bytes;
  void Add(uint32_t opcode, Fields values) {
    uint64_t w[2] = {0, 0};
    values["opcode"] = opcode;
    Put(w, FieldsOf(opcode), values);
    size_t at = bytes.size();
    bytes.resize(at + kInsnBytes);
    std::memcpy(bytes.data() + at, w, kInsnBytes);
  }
};

uint64_t Uop(int64_t acc, int64_t inp, int64_t wgt) {
  uint64_t w[2] = {0, 0};
  Put(w, UopFields(), {{"acc", acc}, {"inp", inp}, {"wgt", wgt}});
  return w[0];
}

// A small machine: block_in 64, block_out 2, so one weight entry is two 8-byte rows.
Config Small() {
  Config c;
  c.block_out = 2;
  c.inp_buff_bytes = 64 * 8;
  c.wgt_buff_bytes = 16 * 16;
  c.acc_buff_bytes = 16 * 8;
  c.uop_buff_bytes = 16 * 8;
  return c;
}

// DRAM layout of these tests (byte offsets): uops @0, input @256, weights @512, output @1024.
std::vector<uint8_t> Dram(uint64_t a, uint64_t w0, uint64_t w1) {
  std::vector<uint8_t> d(2048, 0);
  uint64_t uop = Uop(0, 0, 0);
  std::memcpy(&d[0], &uop, 8);
  std::memcpy(&d[256], &a, 8);
  std::memcpy(&d[512], &w0, 8);
  std::memcpy(&d[520], &w1, 8);
  return d;
}

void Loads(Program* p) {
  Fields row = {{"y_size", 1}, {"x_size", 1}, {"x_stride", 1}, {"planes", 1}};
  Fields uop = row, inp = row, wgt = row;
  uop.insert({{"mem_type", kMemUop}, {"dram_base", 0}});
  inp.insert({{"mem_type", kMemInp}, {"dram_base", 256 / 8}, {"push_next", 1}});
  wgt.insert({{"mem_type", kMemWgt}, {"dram_base", 512 / 16}, {"push_next", 1}});
  p->Add(kLoad, uop);
  p->Add(kLoad, inp);
  p->Add(kLoad, wgt);
}

Fields Gemm1(bool reset) {
  return {{"reset", reset}, {"a_bits", 1}, {"w_bits", 1}, {"uop_bgn", 0}, {"uop_end", 1},
          {"iter_out", 1}, {"iter_in", 1}};
}

void Store(Program* p, Fields extra = {}) {
  Fields st = {{"mem_type", kMemAcc}, {"out_bytes_log2", 2}, {"dram_base", 1024 / 8},
               {"y_size", 1}, {"x_size", 1}, {"x_stride", 1}};
  for (auto& kv : extra) st[kv.first] = kv.second;
  p->Add(kStore, st);
}

template <typename F>
std::string ErrorOf(F f, SimError::Kind* kind = nullptr) {
  try {
    f();
  } catch (const SimError& e) {
    if (kind) *kind = e.kind;
    return e.what();
  }
  return "";
}

void TestLayoutsDoNotOverlap() {
  for (uint32_t op = 0; op <= kFinish; ++op) {
    uint64_t used[2] = {0, 0};
    for (const Field& f : FieldsOf(op)) {
      EXPECT(f.lo + f.width <= 64);
      uint64_t m = ((f.width >= 64) ? ~0ULL : (1ULL << f.width) - 1) << f.lo;
      EXPECT((used[f.word] & m) == 0);
      used[f.word] |= m;
    }
  }
}

void TestXorGemmAndStore() {
  uint64_t a = 0xF0F0F0F0F0F0F0F0ULL, w0 = 0xFFFFFFFFFFFFFFFFULL, w1 = 0x0F0F0F0F0F0F0F0FULL;
  Program p;
  Loads(&p);
  p.Add(kGemm, Gemm1(true));
  Fields g = Gemm1(false);
  g["pop_prev"] = 1;
  p.Add(kGemm, g);
  Fields g2 = Gemm1(false);
  g2["pop_prev"] = 1;
  g2["push_next"] = 1;
  p.Add(kGemm, g2);  // the second token; accumulates the same product twice
  Store(&p, {{"pop_prev", 1}});
  RunResult r = Run(Small(), p.bytes.data(), p.bytes.size(), Dram(a, w0, w1), true, 1 << 30);
  int32_t out[2];
  std::memcpy(out, &r.dram[1024], 8);
  EXPECT(out[0] == 2 * __builtin_popcountll(a ^ w0));  // 2 * 32
  EXPECT(out[1] == 2 * 64);
  EXPECT(r.stats_json.find("\"trace\":[") != std::string::npos);
}

void TestAndModeMultiBit() {
  // 2-bit activation (planes 0b01, 0b11 in lanes 0 and 1), 1-bit weight ones in both lanes:
  // AND mode sums the unsigned codes: u0 = 1 + 2 = 3, u1 = 0 + 2 = 2 -> 5.
  std::vector<uint8_t> d(2048, 0);
  uint64_t uop = Uop(0, 0, 0), a0 = 0b01, a1 = 0b11, w = 0b11;
  std::memcpy(&d[0], &uop, 8);
  std::memcpy(&d[256], &a0, 8);
  std::memcpy(&d[264], &a1, 8);
  std::memcpy(&d[512], &w, 8);
  Program p;
  p.Add(kLoad, {{"mem_type", kMemUop}, {"y_size", 1}, {"x_size", 1}, {"x_stride", 1}, {"planes", 1}});
  p.Add(kLoad, {{"mem_type", kMemInp}, {"dram_base", 32}, {"y_size", 1}, {"x_size", 1},
                {"x_stride", 1}, {"planes", 2}, {"push_next", 1}});
  p.Add(kLoad, {{"mem_type", kMemWgt}, {"dram_base", 32}, {"y_size", 1}, {"x_size", 1},
                {"x_stride", 1}, {"planes", 1}});
  p.Add(kGemm, Gemm1(true));
  Fields g = Gemm1(false);
  g.insert({{"pop_prev", 1}, {"mode", kGemmAnd}, {"push_next", 1}});
  g["a_bits"] = 2;
  p.Add(kGemm, g);
  Store(&p, {{"pop_prev", 1}});
  RunResult r = Run(Small(), p.bytes.data(), p.bytes.size(), d, false, 1 << 30);
  int32_t out;
  std::memcpy(&out, &r.dram[1024], 4);
  EXPECT(out == 5);
}

void TestDeadlock() {
  Program p;
  Fields g = Gemm1(true);
  g["pop_prev"] = 1;  // nobody ever pushes load2compute
  p.Add(kGemm, g);
  SimError::Kind kind = SimError::kProgram;
  std::string msg = ErrorOf([&] { Run(Small(), p.bytes.data(), p.bytes.size(), Dram(0, 0, 0), false, 1 << 30); }, &kind);
  EXPECT(kind == SimError::kDeadlock);
  EXPECT(msg.find("deadlock at instruction 0") == 0);
  EXPECT(msg.find("load2compute") != std::string::npos);
}

void TestOutOfRange() {
  Program p;
  Loads(&p);
  Fields g = Gemm1(true);
  g["dst_factor_out"] = 100;  // acc has 16 entries
  g["iter_out"] = 2;
  p.Add(kGemm, g);
  std::string msg = ErrorOf([&] { Run(Small(), p.bytes.data(), p.bytes.size(), Dram(0, 0, 0), false, 1 << 30); });
  EXPECT(msg.find("instruction 3 (GEMM): accumulator buffer index 100 out of range [0, 16)") == 0);

  Program q;
  q.Add(kLoad, {{"mem_type", kMemInp}, {"dram_base", 1000}, {"y_size", 1}, {"x_size", 1},
                {"x_stride", 1}, {"planes", 1}});
  msg = ErrorOf([&] { Run(Small(), q.bytes.data(), q.bytes.size(), Dram(0, 0, 0), false, 1 << 30); });
  EXPECT(msg.find("instruction 0 (LOAD INP): DRAM bytes [8000, 8008)") == 0);
}

void TestBudget() {
  Program p;
  Loads(&p);
  Fields g = Gemm1(true);
  g["iter_out"] = 2000;
  g["iter_in"] = 2000;
  p.Add(kGemm, g);
  SimError::Kind kind = SimError::kProgram;
  std::string msg = ErrorOf([&] { Run(Small(), p.bytes.data(), p.bytes.size(), Dram(0, 0, 0), false, 100000); }, &kind);
  EXPECT(kind == SimError::kBudget);
  EXPECT(msg.find("max_cycles=100000") != std::string::npos);
}

void TestLoadCycles() {
  // One 64-byte input row at 8 B/cycle: latency 32 + 8 beats.
  Config c = Small();
  Program p;
  p.Add(kLoad, {{"mem_type", kMemInp}, {"y_size", 1}, {"x_size", 8}, {"x_stride", 8}, {"planes", 1}});
  RunResult r = Run(c, p.bytes.data(), p.bytes.size(), std::vector<uint8_t>(64), false, 1 << 30);
  EXPECT(r.stats_json.find("\"cycles\":40,") == 0 + 1);
}

}  // namespace

int main() {
  std::vector<std::pair<const char*, std::function<void()>>> tests = {
      {"layouts_do_not_overlap", TestLayoutsDoNotOverlap},
      {"xor_gemm_and_store", TestXorGemmAndStore},
      {"and_mode_multi_bit", TestAndModeMultiBit},
      {"deadlock", TestDeadlock},
      {"out_of_range", TestOutOfRange},
      {"budget", TestBudget},
      {"load_cycles", TestLoadCycles},
  };
  for (auto& [name, fn] : tests) {
    int before = failures;
    try {
      fn();
    } catch (const std::exception& e) {
      std::cerr << name << ": unexpected exception: " << e.what() << "\n";
      ++failures;
    }
    std::cout << (failures == before ? "PASS " : "FAIL ") << name << "\n";
  }
  return failures == 0 ? 0 : 1;
}
