// build_engine: define the model, run the passes over its Graph, convert every kept weight to the
// target dtype (f32 via the same gather as WeightStore::load, so an engine holds exactly the bytes
// a direct load would upload) and write the file one weight at a time.
#include "build/engine_builder.h"

#include <cctype>
#include <chrono>
#include <filesystem>
#include <set>

#include "build/passes/dead_code.h"
#include "build/passes/gemm_autotune.h"
#include "build/passes/tuning_cache.h"
#include "build/quantize/prequant_import.h"
#include "build/quantize/quantize_pass.h"
#include "core/logging.h"
#include "core/thread_pool.h"
#include "runtime/weights.h"

namespace anvil {

std::string dtype_option_name(DType t) { return t == DType::kF16 ? "fp16" : std::string(dtype_name(t)); }

std::string gpu_arch_from_device_name(const std::string& name) {
  const size_t at = name.rfind("sm_");
  if (at == std::string::npos) return "";
  size_t end = at + 3;
  while (end < name.size() && std::isalnum(static_cast<unsigned char>(name[end]))) ++end;
  return end > at + 3 ? name.substr(at, end - at) : "";
}

Status resolve_build_options(const ModelSpec& spec, EngineBuildOptions* o) {
  switch (o->backend) {
    case BackendKind::kCpu:
      if (o->dtype != DType::kF32) {
        return invalid_argument("--dtype " + dtype_option_name(o->dtype) +
                                ": the CPU backend computes in f32; use --dtype f32 for --backend cpu");
      }
      o->cuda_arch = 0;
      break;
    case BackendKind::kCuda:
      if (o->dtype != DType::kBF16 && o->dtype != DType::kF16) {
        return invalid_argument("--dtype " + dtype_option_name(o->dtype) +
                                ": the CUDA backend computes in bf16 or fp16; use --dtype bf16 or --dtype fp16");
      }
      if (o->cuda_arch < 0 || o->cuda_arch > 200) {
        return invalid_argument("--cuda-arch " + std::to_string(o->cuda_arch) + " is not a GPU architecture (e.g. 90 for sm_90)");
      }
      break;
  }
  if (o->max_batch <= 0) return invalid_argument("--max-batch must be positive");
  if (o->max_num_tokens <= 0) return invalid_argument("--max-num-tokens must be positive");
  if (o->kv_block_size <= 0 || o->kv_block_size > 256 || (o->kv_block_size & (o->kv_block_size - 1))) {
    return invalid_argument("--kv-block-size " + std::to_string(o->kv_block_size) + " must be a power of two up to 256");
  }
  if (o->max_seq_len < 0) return invalid_argument("--max-seq-len must not be negative");
  // Quantization (docs/quantization.md).
  switch (o->quant) {
    case QuantMethod::kInt4WeightOnly:
    case QuantMethod::kInt4Awq:
    case QuantMethod::kInt4Gptq:
      if (o->group_size != 32 && o->group_size != 64 && o->group_size != 128) {
        return invalid_argument("--group-size " + std::to_string(o->group_size) + ": int4 groups are 32, 64 or 128 input channels");
      }
      break;
    case QuantMethod::kNone:
    case QuantMethod::kInt8WeightOnly:
    case QuantMethod::kW8A8SmoothQuant:
    case QuantMethod::kFp8:
    case QuantMethod::kFp8Gptq: o->group_size = 0; break;  // per-channel formats: no groups
  }
  if (o->kv_cache_dtype != DType::kF8E4M3 && o->kv_cache_dtype != DType::kI8) o->kv_cache_dtype = o->dtype;
  if (calibration_needs(*o).any() && o->calib_samples <= 0) {
    return invalid_argument("--calib-samples must be positive for --quant " + std::string(quant_method_name(o->quant)) +
                            (calibration_needs(*o).kv ? " / a quantized --kv-cache" : ""));
  }
  if (o->max_seq_len == 0) {
    if (spec.max_position_embeddings <= 0 || spec.max_position_embeddings > (int64_t{1} << 30)) {
      return invalid_argument("config.json gives no usable max_position_embeddings; pass --max-seq-len");
    }
    o->max_seq_len = static_cast<int32_t>(spec.max_position_embeddings);
  }
  return Status::ok();
}

Result<BuildReport> build_engine(const std::string& model_dir, const EngineBuildOptions& options,
                                 const std::string& out_path, Backend* device, const CalibrationData* calib) {
  ANVIL_ASSIGN_OR_RETURN(ModelSpec spec, load_model_config(model_dir));
  ANVIL_ASSIGN_OR_RETURN(ModelDefinition def, define_model(spec));
  ANVIL_ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::open(model_dir));
  return build_engine_from_definition(std::move(def), ckpt, options, out_path, device, calib);
}

Result<BuildReport> build_engine_from_definition(ModelDefinition def, const Checkpoint& ckpt, EngineBuildOptions o,
                                                 const std::string& out_path, Backend* device, const CalibrationData* calib) {
  const auto t0 = std::chrono::steady_clock::now();
  ANVIL_RETURN_IF_ERROR(resolve_build_options(def.spec, &o));
  EngineHeader h;
  h.anvil_version = ANVIL_VERSION;
  std::error_code ec;
  const std::filesystem::path src = std::filesystem::absolute(ckpt.dir(), ec);
  h.source_model_dir = ec ? ckpt.dir() : src.lexically_normal().string();
  h.spec = def.spec;
  h.options = o;
  // A pre-quantized checkpoint: its projections are imported as stored (prequant_import.h); the
  // header records its method while o.quant becomes none (no calibration, no quantize pass).
  ANVIL_ASSIGN_OR_RETURN(const std::optional<PrequantImport> prequant, PrequantImport::plan_build(def, ckpt, &o, &h.options));
  h.device_name = device ? device->name() : o.backend == BackendKind::kCpu ? "cpu" : "";
  switch (o.backend) {
    case BackendKind::kCpu:
      if (device && device->device() != Device::kCpu) {
        return invalid_argument("a CPU engine is built beside a CPU backend, not " + device->name());
      }
      break;
    case BackendKind::kCuda: {
      const std::string found = device && device->device() == Device::kCuda ? gpu_arch_from_device_name(device->name()) : "";
      if (o.cuda_arch > 0) {
        h.gpu_arch = "sm_" + std::to_string(o.cuda_arch);
        if (!found.empty() && found != h.gpu_arch && found != h.gpu_arch + "a") {
          return invalid_argument("--cuda-arch " + std::to_string(o.cuda_arch) + " does not match the GPU present (" + found +
                                  "); drop --cuda-arch to build for this GPU");
        }
      } else if (!found.empty()) {
        h.gpu_arch = found;
      } else {
        return invalid_argument("no GPU visible to read the architecture from: pass --cuda-arch (e.g. --cuda-arch 90 for sm_90)");
      }
      break;
    }
  }

  // Pass: dead-tensor elimination, then keep only the weights the graph still reads.
  DeadCodeReport dce;
  h.graph = eliminate_dead_code(def.graph, &dce);
  h.dce_ops_removed = dce.ops_removed;
  h.dce_tensors_removed = dce.tensors_removed;
  std::set<std::string> graph_weights;
  for (const GraphTensor& t : h.graph.tensors())
    if (t.kind == TensorKind::kWeight) graph_weights.insert(t.name);
  std::set<std::string> table_names;
  std::vector<const WeightSource*> kept;
  std::set<std::string> expected_hf;  // every HF tensor the definition places, used or not
  for (const WeightSource& ws : def.weights) {
    table_names.insert(ws.name);
    for (const std::string& hf : ws.hf_names) expected_hf.insert(hf);
    if (graph_weights.count(ws.name)) {
      kept.push_back(&ws);
    } else {
      h.dce_weights_removed.push_back(ws.name);
    }
  }
  for (const std::string& name : graph_weights) {
    if (!table_names.count(name)) return internal_error("graph weight '" + name + "' has no entry in the weight table");
  }
  if (prequant) expected_hf.insert(prequant->hf_tensors().begin(), prequant->hf_tensors().end());
  ANVIL_RETURN_IF_ERROR(check_no_unexpected_tensors(def, ckpt, expected_hf));

  // Pass: quantization (after DCE, so dropped weights are never calibrated or quantized). The
  // calibration run uses the unquantized definition and frees its weights before conversion.
  CalibrationStats calib_stats;
  const CalibrationNeeds needs = calibration_needs(o);
  if (needs.any()) {
    if (!calib || calib->sequences.empty()) {
      return invalid_argument("--quant " + std::string(quant_method_name(o.quant)) + " / --kv-cache " +
                              dtype_option_name(o.kv_cache_dtype) +
                              " needs calibration text: none was given (anvil build tokenizes --calib FILE or the bundled sample)");
    }
    ANVIL_ASSIGN_OR_RETURN(calib_stats, collect_calibration_stats(def, ckpt, device, *calib, needs));
  }
  SequentialQuantization sequential;
  if (quantizes_sequentially(o.quant)) {
    ANVIL_ASSIGN_OR_RETURN(sequential, quantize_gptq_sequentially(def, ckpt, device, *calib, o));
  }
  ANVIL_ASSIGN_OR_RETURN(const QuantizePass quant,
                         QuantizePass::plan(def, ckpt, o, needs.any() ? &calib_stats : nullptr, std::move(sequential)));
  h.graph = quant.rewrite(h.graph);
  if (prequant) h.graph = prequant->rewrite(h.graph);

  // Pass: weight packing is the weight table's concatenation; record it per weight. A quantized
  // projection becomes its qweight / scales / offsets, made together by one job.
  struct Job {
    const WeightSource* source = nullptr;  // null: bytes made by the quantize pass (KV scales)
    size_t first = 0, count = 0;           // engine weights [first, first + count)
    DType dtype = DType::kF32;
  };
  std::vector<Job> jobs;
  std::vector<std::vector<uint8_t>> ready;
  for (const WeightSource* ws : kept) {
    Job j{ws, h.weights.size(), 0, ws->keep_f32 ? DType::kF32 : o.dtype};
    const bool imported = prequant && prequant->imports(*ws);
    for (EngineWeight& w : imported ? prequant->engine_weights(*ws) : quant.engine_weights(*ws, j.dtype)) {
      h.weights.push_back(std::move(w));
    }
    j.count = h.weights.size() - j.first;
    jobs.push_back(j);
  }
  ready.resize(h.weights.size());
  for (const auto& [w, bytes] : quant.kv_scale_weights()) {
    jobs.push_back({nullptr, h.weights.size(), 1, DType::kF32});
    h.weights.push_back(w);
    ready.push_back(bytes);
  }
  std::set<std::string> engine_names;
  for (const EngineWeight& w : h.weights) engine_names.insert(w.name);
  for (const GraphTensor& t : h.graph.tensors()) {
    if (t.kind == TensorKind::kWeight && !engine_names.count(t.name)) {
      return internal_error("graph weight '" + t.name + "' has no engine weight after quantization");
    }
  }

  // Pass: activation memory planning for the build's largest step.
  h.plan_max_tokens = o.max_num_tokens;
  h.plan_max_logit_rows = o.max_batch;
  h.plan_elem_bytes = static_cast<int64_t>(dtype_size(o.dtype));
  h.plan = plan_memory(h.graph, h.plan_max_tokens, h.plan_max_logit_rows, dtype_size(o.dtype));

  // Pass: GEMM autotuning (CUDA device present).
  ANVIL_RETURN_IF_ERROR(autotune_gemms(device, default_tuning_cache_path(), &h));

  BuildReport report;
  report.path = out_path;
  report.num_weights = static_cast<int64_t>(h.weights.size());
  for (const EngineWeight& w : h.weights) {
    report.weight_bytes += w.bytes;
    if (w.packed_from.size() > 1) ++report.num_packed_weights;
  }
  report.ops = static_cast<int32_t>(h.graph.nodes().size());
  report.ops_removed = h.dce_ops_removed;
  report.tensors_removed = h.dce_tensors_removed;
  report.weights_removed = h.dce_weights_removed;
  report.activation_peak_bytes = h.plan.arena_bytes;
  report.activation_unplanned_bytes = h.plan.unplanned_bytes;
  report.gpu_arch = h.gpu_arch;
  report.gemm_tuning_status = h.gemm_tuning_status;
  report.gemm_shapes_tuned = static_cast<int64_t>(h.gemm_tuning.size());

  report.num_quantized_linears = 0;
  for (const Node& n : h.graph.nodes()) report.num_quantized_linears += n.op == OpKind::kQLinear;
  report.calibration_tokens = calib_stats.tokens;

  // Weights are converted in parallel batches of jobs and written in order.
  const ModelDefinition& d = def;
  std::vector<Status> job_status(jobs.size());
  std::vector<size_t> job_of(h.weights.size());
  for (size_t j = 0; j < jobs.size(); ++j)
    for (size_t i = 0; i < jobs[j].count; ++i) job_of[jobs[j].first + i] = j;
  size_t jobs_done = 0;
  auto run_job = [&](size_t j) {
    const Job& jb = jobs[j];
    if (!jb.source) return;
    Result<std::vector<std::vector<uint8_t>>> bytes = internal_error("unreachable");
    if (prequant && prequant->imports(*jb.source)) {
      bytes = prequant->produce(*jb.source);
    } else {
      Result<std::vector<float>> host = gather_weight_f32(d, *jb.source, ckpt, nullptr);
      if (!host.is_ok()) {
        job_status[j] = host.status();
        return;
      }
      bytes = quant.produce(*jb.source, std::move(host).value(), jb.dtype);
    }
    if (!bytes.is_ok() || bytes->size() != jb.count) {
      job_status[j] = bytes.is_ok() ? internal_error("quantize pass made the wrong number of weights for " + jb.source->name)
                                    : bytes.status();
      return;
    }
    for (size_t i = 0; i < jb.count; ++i) ready[jb.first + i] = std::move((*bytes)[i]);
  };
  // AWQ jobs run one at a time, parallel inside (the searches); the
  // round-to-nearest quantizers and plain conversions run many jobs at once (a nested
  // parallel_for runs inline), bounded by the f32 values they hold (~12 GiB) and 2 per thread.
  const bool solo_quant = o.quant == QuantMethod::kInt4Awq;  // GPTQ's work was done layer by layer above
  auto solo = [&](size_t j) { return solo_quant && jobs[j].source && quant.quantizes(*jobs[j].source); };
  auto held_bytes = [&](size_t j) -> uint64_t {
    // A quantizing job holds its f32 values and their dequantized copy (the build log's error).
    if (jobs[j].source && quant.quantizes(*jobs[j].source)) return static_cast<uint64_t>(jobs[j].source->shape.numel()) * 8;
    return h.weights[jobs[j].first].bytes;
  };
  auto produce = [&](size_t i, std::vector<uint8_t>* bytes) -> Status {
    const size_t j = job_of[i];
    if (j >= jobs_done) {
      if (solo(j)) {
        run_job(j);
        jobs_done = j + 1;
      } else {
        constexpr uint64_t kBatchBytes = uint64_t{12} << 30;
        const size_t max_count = static_cast<size_t>(ThreadPool::global().num_threads()) * 2;
        size_t end = j;
        uint64_t sum = 0;
        while (end < jobs.size() && !solo(end) && (end == j || (sum + held_bytes(end) <= kBatchBytes && end - j < max_count))) {
          sum += held_bytes(end);
          ++end;
        }
        ThreadPool::global().parallel_for(static_cast<int64_t>(end - j), [&](int64_t b, int64_t e) {
          for (int64_t k = b; k < e; ++k) run_job(j + static_cast<size_t>(k));
        });
        jobs_done = end;
      }
    }
    ANVIL_RETURN_IF_ERROR(job_status[j]);
    if (ready[i].size() != h.weights[i].bytes) {
      return internal_error("weight " + h.weights[i].name + " has " + std::to_string(ready[i].size()) + " bytes, expected " +
                            std::to_string(h.weights[i].bytes));
    }
    bytes->swap(ready[i]);
    std::vector<uint8_t>().swap(ready[i]);
    return Status::ok();
  };
  ANVIL_RETURN_IF_ERROR(write_engine_file(out_path, h, produce));
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ANVIL_LOG_INFO("built %s: %lld weights (%.1f MiB, %lld packed), %d ops, in %.2f s", out_path.c_str(),
                 static_cast<long long>(report.num_weights), report.weight_bytes / 1048576.0,
                 static_cast<long long>(report.num_packed_weights), report.ops, report.seconds);
  return report;
}

}  // namespace anvil
