// --quant and friends -> EngineBuildOptions, plus calibration text -> token sequences.
#include "cli/quant_args.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "build/quantize/prequant_import.h"
#include "build/quantize/quantize_pass.h"
#include "core/logging.h"
#include "model/model_spec.h"
#include "tokenizer/tokenizer.h"

namespace anvil::cli {

void add_quant_options(CLI::App* cmd, QuantArgs* a) {
  cmd->add_option("--quant", a->quant,
                  "Weight quantization: none, int8-wo, int4-wo, int4-awq, int4-gptq, w8a8-sq, fp8 or fp8-gptq (docs/quantization.md)")
      ->check(CLI::IsMember({"none", "int8-wo", "int4-wo", "int4-awq", "int4-gptq", "w8a8-sq", "fp8", "fp8-gptq"}));
  cmd->add_option("--group-size", a->group_size, "Input channels per int4 group")->check(CLI::IsMember({32, 64, 128}));
  cmd->add_option("--kv-cache", a->kv_cache, "KV cache type: auto (the compute dtype), fp8 or int8 (per-head scales from calibration)")
      ->check(CLI::IsMember({"auto", "bf16", "fp16", "f32", "fp8", "int8"}));
  cmd->add_option("--calib", a->calib, "Calibration text for int4-awq, int4-gptq, w8a8-sq, fp8-gptq and --kv-cache fp8|int8 (default: the bundled sample)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--calib-samples", a->calib_samples, "Calibration sequences (up to 512 tokens each)")->check(CLI::Range(1, 4096));
}

bool quantization_requested(const QuantArgs& a) { return a.quant != "none" || a.kv_cache == "fp8" || a.kv_cache == "int8"; }

std::string bundled_calibration_file() {
  if (const char* f = std::getenv("ANVIL_CALIB_FILE"); f && *f) return f;
  return std::string(ANVIL_SOURCE_DIR_DEFAULT) + "/data/calib/calibration.txt";
}

Status apply_quant_args(const QuantArgs& a, const std::string& model_dir, EngineBuildOptions* o, CalibrationData* calib) {
  ANVIL_ASSIGN_OR_RETURN(o->quant, quant_method_from_name(a.quant));
  o->group_size = a.group_size;
  o->kv_cache_dtype = a.kv_cache == "fp8" ? DType::kF8E4M3 : a.kv_cache == "int8" ? DType::kI8 : o->dtype;
  o->calib_samples = a.calib_samples;
  o->calib_file.clear();
  if (!calibration_needs(*o).any()) return Status::ok();
  // A pre-quantized checkpoint is imported as stored: nothing to calibrate (build_engine checks
  // --quant and --kv-cache against it and names what does not fit).
  if (Result<std::optional<PrequantScheme>> pq = read_prequant_scheme(model_dir); !pq.is_ok() || pq->has_value()) {
    return Status::ok();
  }

  const std::string file = a.calib.empty() ? bundled_calibration_file() : a.calib;
  std::error_code ec;
  o->calib_file = std::filesystem::absolute(file, ec).lexically_normal().string();
  if (ec) o->calib_file = file;
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return not_found("calibration text " + file + " cannot be read" +
                     (a.calib.empty() ? " (the bundled sample; pass --calib FILE or set ANVIL_CALIB_FILE)" : ""));
  }
  std::stringstream text;
  text << in.rdbuf();
  ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, Tokenizer::load(model_dir));
  ANVIL_ASSIGN_OR_RETURN(ModelSpec spec, load_model_config(model_dir));
  const std::vector<int32_t> ids = tok->encode(text.str(), false);
  int32_t max_len = kCalibrationMaxSeqLen;
  if (spec.max_position_embeddings > 0 && spec.max_position_embeddings < max_len) max_len = static_cast<int32_t>(spec.max_position_embeddings);
  calib->sequences = split_calibration_tokens(ids, a.calib_samples, max_len);
  calib->source = file;
  if (calib->sequences.empty()) return invalid_argument("calibration text " + file + " holds no tokens");
  if (static_cast<int32_t>(calib->sequences.size()) < a.calib_samples) {
    ANVIL_LOG_WARN("calibration text %s (%zu tokens) gives %zu sequences of %zu tokens, fewer than --calib-samples %d",
                   file.c_str(), ids.size(), calib->sequences.size(), calib->sequences[0].size(), a.calib_samples);
  }
  return Status::ok();
}

}  // namespace anvil::cli
