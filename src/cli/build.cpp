// `anvil build --model DIR -o FILE.anvil`: writes one engine file (docs/engine.md) and prints what
// the passes did: packed weights, removed ops, planned activation peak against the unplanned sum,
// GEMM autotuning. A CUDA engine needs a visible GPU or an explicit --cuda-arch.
#include <cstdio>
#include <memory>

#include "build/engine_builder.h"
#include "build/quantize/prequant_import.h"
#include "cli/command.h"
#include "cli/quant_args.h"
#include "core/logging.h"

namespace anvil::cli {
namespace {

struct BuildOptions {
  std::string model;
  std::string output;
  std::string backend = "auto";
  std::string dtype = "auto";
  int32_t max_batch = 64;
  int32_t max_seq_len = 0;
  int32_t max_num_tokens = 2048;
  int32_t kv_block_size = 16;
  int32_t cuda_arch = 0;
  QuantArgs quant;
};

int fail(const Status& s) {
  std::fprintf(stderr, "anvil build: %s\n", s.to_string().c_str());
  return 1;
}

int run_build(const BuildOptions& o) {
  const std::string& m = o.model;
  if (m.size() > 5 && m.compare(m.size() - 5, 5, ".gguf") == 0) {
    return fail(invalid_argument("--model " + m + " is a GGUF file; convert it first with anvil convert, then build the folder"));
  }
  EngineBuildOptions eo;
  eo.backend = o.backend == "cuda" || (o.backend == "auto" && cuda_available()) ? BackendKind::kCuda : BackendKind::kCpu;
  const std::string dtype = o.dtype != "auto" ? o.dtype : eo.backend == BackendKind::kCpu ? "f32" : "bf16";
  eo.dtype = dtype == "f32" ? DType::kF32 : dtype == "fp16" ? DType::kF16 : DType::kBF16;
  eo.max_batch = o.max_batch;
  eo.max_seq_len = o.max_seq_len;
  eo.max_num_tokens = o.max_num_tokens;
  eo.kv_block_size = o.kv_block_size;
  eo.cuda_arch = o.cuda_arch;
  if (eo.backend == BackendKind::kCpu && o.cuda_arch != 0) return fail(invalid_argument("--cuda-arch applies to --backend cuda only"));
  CalibrationData calib;
  if (Status s = apply_quant_args(o.quant, o.model, &eo, &calib); !s.is_ok()) return fail(s);

  // A CUDA device, when present, gives the architecture and runs the GEMM autotuning.
  std::unique_ptr<Backend> device;
  if (eo.backend == BackendKind::kCuda && cuda_available()) {
    BackendOptions bo;
    bo.kind = BackendKind::kCuda;
    bo.compute_dtype = eo.dtype;
    auto b = create_backend(bo);
    if (!b.is_ok()) return fail(b.status());
    device = std::move(b).value();
  }
  auto r = build_engine(o.model, eo, o.output, device.get(), &calib);
  if (!r.is_ok()) return fail(r.status());
  const BuildReport& rep = *r;
  const double peak = rep.activation_peak_bytes / 1048576.0, unplanned = rep.activation_unplanned_bytes / 1048576.0;
  std::printf("engine        %s\n", rep.path.c_str());
  std::printf("target        %s %s%s%s\n", eo.backend == BackendKind::kCpu ? "cpu" : "cuda", std::string(dtype_name(eo.dtype)).c_str(),
              rep.gpu_arch.empty() ? "" : " ", rep.gpu_arch.c_str());
  std::printf("weights       %lld tensors, %.1f MiB (%lld packed: qkv, gate_up)\n", static_cast<long long>(rep.num_weights),
              rep.weight_bytes / 1048576.0, static_cast<long long>(rep.num_packed_weights));
  std::printf("graph         %d ops; dead-tensor elimination removed %d ops, %d tensors, %zu weights\n", rep.ops,
              rep.ops_removed, rep.tensors_removed, rep.weights_removed.size());
  for (const std::string& w : rep.weights_removed) std::printf("              unused weight dropped: %s\n", w.c_str());
  std::printf("activations   planned peak %.2f MiB vs %.2f MiB unplanned (%.0f%% saved) for %d tokens/step\n", peak, unplanned,
              unplanned > 0 ? 100.0 * (1.0 - peak / unplanned) : 0.0, eo.max_num_tokens);
  const Result<std::optional<PrequantScheme>> prequant = read_prequant_scheme(o.model);  // read by the build already
  if (prequant.is_ok() && prequant->has_value()) {
    std::printf("quantization  pre-quantized %s: %lld projections imported as stored\n", (*prequant)->description().c_str(),
                static_cast<long long>(rep.num_quantized_linears));
  } else if (eo.quant != QuantMethod::kNone || eo.kv_cache_dtype == DType::kF8E4M3 || eo.kv_cache_dtype == DType::kI8) {
    std::printf("quantization  %s%s: %lld projections quantized; kv cache %s; calibration %s\n", quant_method_name(eo.quant),
                eo.group_size > 0 && rep.num_quantized_linears > 0 && (eo.quant == QuantMethod::kInt4WeightOnly ||
                                                                      eo.quant == QuantMethod::kInt4Awq ||
                                                                      eo.quant == QuantMethod::kInt4Gptq)
                    ? (" g" + std::to_string(eo.group_size)).c_str()
                    : "",
                static_cast<long long>(rep.num_quantized_linears), o.quant.kv_cache == "fp8" || o.quant.kv_cache == "int8" ? o.quant.kv_cache.c_str() : "unquantized",
                rep.calibration_tokens > 0 ? (std::to_string(rep.calibration_tokens) + " tokens of " + calib.source).c_str() : "none");
  }
  std::printf("gemm autotune %s (%lld shape buckets)\n", rep.gemm_tuning_status.c_str(), static_cast<long long>(rep.gemm_shapes_tuned));
  std::printf("built in      %.2f s\n", rep.seconds);
  return 0;
}

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("build", "Build an optimized engine file from a Hugging Face model folder");
  auto o = std::make_shared<BuildOptions>();
  cmd->add_option("--model", o->model, "Hugging Face model folder")->required();
  cmd->add_option("-o,--output", o->output, "Engine file to write (FILE.anvil)")->required();
  cmd->add_option("--backend", o->backend, "cpu, cuda or auto (cuda when a GPU is present)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->add_option("--dtype", o->dtype, "Weight/compute dtype: bf16 or fp16 (cuda), f32 (cpu); auto picks")
      ->check(CLI::IsMember({"auto", "bf16", "fp16", "f32"}));
  cmd->add_option("--max-batch", o->max_batch, "Sequences per step")->check(CLI::Range(1, 4096));
  cmd->add_option("--max-seq-len", o->max_seq_len, "Longest sequence; 0 = the model's limit")->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-num-tokens", o->max_num_tokens, "Token budget of one step")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--kv-block-size", o->kv_block_size, "KV cache block size in tokens")->check(CLI::IsMember({8, 16, 32, 64}));
  cmd->add_option("--cuda-arch", o->cuda_arch, "GPU architecture to build for without a GPU present, e.g. 90 for sm_90")
      ->check(CLI::Range(50, 200));
  add_quant_options(cmd, &o->quant);
  cmd->callback([o] { set_exit_code(run_build(*o)); });
}

CommandRegistrar reg("build", setup);

}  // namespace
}  // namespace anvil::cli
