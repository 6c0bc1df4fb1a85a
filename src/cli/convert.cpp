// `anvil convert --gguf FILE -o DIR [--dtype bf16|f32|f16]`: turns a llama.cpp GGUF model into a
// Hugging Face folder (config, tokenizer, model.safetensors) that every other command can load.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/command.h"
#include "core/dtype.h"
#include "model/checkpoint/gguf_convert.h"

namespace {

struct ConvertOptions {
  std::string gguf;
  std::string out_dir;
  std::string dtype = "bf16";
};

int run_convert(const ConvertOptions& o) {
  std::optional<anvil::DType> dtype = anvil::dtype_from_name(o.dtype);
  if (!dtype || (*dtype != anvil::DType::kBF16 && *dtype != anvil::DType::kF32 && *dtype != anvil::DType::kF16)) {
    std::fprintf(stderr, "anvil convert: --dtype '%s' is not one of bf16, f32, f16\n", o.dtype.c_str());
    return 2;
  }
  anvil::Status s = anvil::convert_gguf_to_hf(o.gguf, o.out_dir, *dtype);
  if (!s.is_ok()) {
    std::fprintf(stderr, "anvil convert: %s\n", s.to_string().c_str());
    return 1;
  }
  std::printf("%s\n", o.out_dir.c_str());
  return 0;
}

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("convert", "Convert a GGUF model (llama architecture) to a Hugging Face folder");
  auto opts = std::make_shared<ConvertOptions>();
  cmd->add_option("--gguf", opts->gguf, "Input .gguf file")->required()->check(CLI::ExistingFile);
  cmd->add_option("-o,--output", opts->out_dir, "Output folder (created if needed)")->required();
  cmd->add_option("--dtype", opts->dtype, "Weight dtype of model.safetensors: bf16 (default), f32 or f16");
  cmd->callback([opts] { anvil::cli::set_exit_code(run_convert(*opts)); });
}

anvil::cli::CommandRegistrar reg("convert", setup);

}  // namespace
