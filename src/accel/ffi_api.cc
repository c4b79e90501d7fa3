// SPDX-License-Identifier: Apache-2.0
// tvm-ffi entry points of the simulator, loaded from Python by tvm_qnn.bitserial_accel (tvm_ffi.load_module).
//
//   isa() -> str                                   instruction layouts as JSON
//   run(config_json, program, dram, trace, max_cycles, gemm_rtl_lib) -> [bytes dram, str stats_json]
//       gemm_rtl_lib: "" (functional GEMM) or the path of a verilated GEMM core (gemm_rtl.h)
//
// SimError kinds become the Python exceptions of tvm_qnn/errors.py (registered by _lib.py).
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <map>
#include <string>

#include "sim.h"

namespace {

namespace ffi = tvm::ffi;
using tvm_qnn::accel::SimError;

std::map<std::string, double> ParseConfig(const ffi::String& config_json) {
  ffi::String error;
  ffi::Any parsed = ffi::json::Parse(config_json, &error);
  if (!error.empty()) {
    throw SimError(SimError::kConfig, "bad accelerator config JSON: " + std::string(error));
  }
  auto obj = parsed.try_cast<ffi::json::Object>();
  if (!obj.has_value()) throw SimError(SimError::kConfig, "accelerator config must be an object");
  std::map<std::string, double> kv;
  for (const auto& [key, value] : *obj) {
    auto name = key.try_cast<ffi::String>();
    if (!name.has_value()) continue;
    // Strings (the board name, comments) are descriptive; numbers are hardware parameters.
    if (auto i = value.try_cast<int64_t>(); i.has_value() && value.type_index() == ffi::TypeIndex::kTVMFFIInt) {
      kv[std::string(*name)] = static_cast<double>(*i);
    } else if (value.type_index() == ffi::TypeIndex::kTVMFFIFloat) {
      kv[std::string(*name)] = value.cast<double>();
    }
  }
  return kv;
}

[[noreturn]] void Rethrow(const SimError& e) {
  switch (e.kind) {
    case SimError::kDeadlock: TVM_FFI_THROW(AccelDeadlockError) << e.what();
    case SimError::kBudget: TVM_FFI_THROW(AccelBudgetError) << e.what();
    case SimError::kConfig: TVM_FFI_THROW(AccelConfigError) << e.what();
    default: TVM_FFI_THROW(AccelProgramError) << e.what();
  }
  TVM_FFI_UNREACHABLE();
}

ffi::String Isa() { return ffi::String(tvm_qnn::accel::IsaJson()); }

ffi::Array<ffi::Any> Run(ffi::String config_json, ffi::Bytes program, ffi::Bytes dram, bool trace,
                         int64_t max_cycles, ffi::String gemm_rtl_lib) {
  try {
    tvm_qnn::accel::Config cfg = tvm_qnn::accel::Config::FromMap(ParseConfig(config_json));
    const uint8_t* d = reinterpret_cast<const uint8_t*>(dram.data());
    tvm_qnn::accel::RunResult r = tvm_qnn::accel::Run(
        cfg, reinterpret_cast<const uint8_t*>(program.data()), program.size(),
        std::vector<uint8_t>(d, d + dram.size()), trace, max_cycles, std::string(gemm_rtl_lib));
    ffi::Bytes out(reinterpret_cast<const char*>(r.dram.data()), r.dram.size());
    return ffi::Array<ffi::Any>{ffi::Any(out), ffi::Any(ffi::String(r.stats_json))};
  } catch (const SimError& e) {
    Rethrow(e);
  }
}

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(isa, Isa);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(run, Run);
