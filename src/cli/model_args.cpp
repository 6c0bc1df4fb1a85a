// open_model: resolve the model path (GGUF -> cached HF folder), create the backend, load.
#include "cli/model_args.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "build/engine_cache.h"
#include "build/engine_loader.h"
#include "build/quantize/prequant_import.h"
#include "core/logging.h"
#include "dist/mpi_communicator.h"
#include "model/checkpoint/gguf_convert.h"
#include "runtime/model_loader.h"

namespace anvil::cli {

namespace fs = std::filesystem;

void add_model_options(CLI::App* cmd, ModelArgs* a) {
  cmd->add_option("--model", a->model, "Hugging Face model folder or .gguf file (default: the bundled SmolLM2-135M-Instruct)");
  cmd->add_option("--backend", a->backend, "cpu, cuda or auto (cuda when a GPU is present)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->add_option("--dtype", a->dtype, "CUDA compute dtype")->check(CLI::IsMember({"bf16", "fp16"}));
  cmd->add_option("--max-seq-len", a->max_seq_len, "Longest sequence (prompt + output); 0 = the model's limit")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-num-tokens", a->max_num_tokens, "Token budget of one step")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--max-num-seqs", a->max_num_seqs, "Sequences in flight at once")->check(CLI::Range(1, 4096));
  cmd->add_option("--kv-block-size", a->block_size, "KV cache block size in tokens")->check(CLI::IsMember({8, 16, 32, 64}));
  cmd->add_option("--gpu-memory-fraction", a->gpu_memory_fraction, "Fraction of free memory the KV cache may use")
      ->check(CLI::Range(0.05, 0.99));
  cmd->add_option("--engine", a->engine, "A built engine file (anvil build); backend, dtype and sizes come from it")
      ->check(CLI::ExistingFile);
  cmd->add_flag("!--no-engine-cache", a->engine_cache,
                "Load --model DIR directly instead of building / reusing a cached engine ($ANVIL_CACHE/engines)");
  cmd->add_flag("!--skip-weight-checksums", a->verify_checksums, "Do not verify each engine weight's checksum at load");
  cmd->add_option("--tp", a->tp, "Tensor-parallel ranks (one process each; started with mpirun, by anvil itself on one host)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--pp", a->pp, "Pipeline-parallel stages (layers split evenly; x --tp ranks in all)")->check(CLI::Range(1, 1024));
  add_quant_options(cmd, &a->quant);
}

Status start_ranks_if_needed(const ModelArgs& a) { return dist::relaunch_under_mpirun_if_needed(a.tp * a.pp); }

bool is_follower_rank(const ModelArgs& a) { return a.tp * a.pp > 1 && dist::launcher_world_rank() > 0; }

int follow_model(OpenModel& m) {
  Status st = m.runner->follow();
  if (st.is_ok()) return 0;
  ANVIL_LOG_ERROR("%s; ending every rank", st.to_string().c_str());
  m.dist->control->abort_job(1);
  return 1;  // not reached
}

void stop_followers(OpenModel& m) {
  if (!m.runner || !m.runner->distributed()) return;
  Status st = m.runner->stop_followers();
  if (!st.is_ok()) ANVIL_LOG_WARN("stopping the other ranks: %s", st.to_string().c_str());
}

std::string cache_dir() {
  if (const char* c = std::getenv("ANVIL_CACHE")) return c;
  if (const char* h = std::getenv("HOME")) return std::string(h) + "/.cache/anvil";
  return "/tmp/anvil-cache";
}

std::string default_model_gguf() {
  if (const char* m = std::getenv("ANVIL_DEFAULT_MODEL")) return m;
  return std::string(ANVIL_SOURCE_DIR_DEFAULT) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

namespace {

// Converts `gguf` into cache_dir()/gguf/<name>-<size>-<mtime>/ unless already there.
Result<std::string> import_gguf(const std::string& gguf) {
  std::error_code ec;
  if (!fs::is_regular_file(gguf, ec)) return not_found("model file '" + gguf + "' does not exist");
  struct stat st {};
  ::stat(gguf.c_str(), &st);
  const std::string key = fs::path(gguf).stem().string() + "-" + std::to_string(st.st_size) + "-" + std::to_string(st.st_mtime) + "-f32";
  const fs::path dir = fs::path(cache_dir()) / "gguf" / key;
  if (fs::exists(dir / "config.json", ec) && fs::exists(dir / "model.safetensors", ec)) return dir.string();
  const fs::path tmp = dir.string() + ".tmp" + std::to_string(::getpid());
  fs::create_directories(tmp, ec);
  if (ec) return invalid_argument("cannot create cache folder " + tmp.string() + ": " + ec.message());
  ANVIL_LOG_INFO("importing %s into %s", gguf.c_str(), dir.c_str());
  // f32: the dequantized values exactly, as HF transformers loads a GGUF; the backend narrows them.
  Status s = convert_gguf_to_hf(gguf, tmp.string(), DType::kF32);
  if (!s.is_ok()) {
    fs::remove_all(tmp, ec);
    return s;
  }
  fs::rename(tmp, dir, ec);
  if (ec && !fs::exists(dir / "config.json")) return invalid_argument("cannot move " + tmp.string() + " into place: " + ec.message());
  fs::remove_all(tmp, ec);
  return dir.string();
}

}  // namespace

namespace {

// --engine FILE: the backend kind and dtype come from the engine's header.
Result<OpenModel> open_engine(const ModelArgs& a, const RunnerOptions& ro) {
  OpenModel m;
  ANVIL_ASSIGN_OR_RETURN(EngineFile file, EngineFile::open(a.engine));
  const EngineHeader& h = file.header();
  const char* target = backend_kind_name(h.options.backend);
  if (a.backend != "auto" && a.backend != target) {
    return invalid_argument("--backend " + a.backend + " but " + a.engine + " was built for " + target +
                            ": drop --backend or rebuild with anvil build --backend " + a.backend);
  }
  BackendOptions bo;
  bo.kind = h.options.backend;
  bo.compute_dtype = h.options.backend == BackendKind::kCpu ? DType::kBF16 : h.options.dtype;
  ANVIL_ASSIGN_OR_RETURN(m.backend, create_backend(bo));
  m.model_dir = a.model.empty() ? h.source_model_dir : a.model;
  EngineLoadOptions lo;
  lo.verify_checksums = a.verify_checksums;
  ANVIL_ASSIGN_OR_RETURN(m.runner, load_engine(a.engine, m.backend.get(), ro, lo));
  return m;
}

}  // namespace

Result<OpenModel> open_model(const ModelArgs& a, int32_t max_logit_rows) {
  RunnerOptions ro;
  ro.max_num_tokens = a.max_num_tokens;
  ro.max_num_seqs = a.max_num_seqs;
  ro.max_logit_rows = std::max(max_logit_rows, a.max_num_seqs);
  ro.max_seq_len = a.max_seq_len;
  ro.block_size = a.block_size;
  ro.kv_memory_fraction = a.gpu_memory_fraction;
  if (a.tp * a.pp > 1 && !a.engine.empty()) {
    return unsupported("--engine with --tp/--pp: engines hold whole-model weights; pass --model DIR (each rank loads its shards)");
  }
  if (!a.engine.empty()) {
    if (quantization_requested(a.quant)) {
      return invalid_argument("--quant / --kv-cache build an engine; " + a.engine + " is already built: drop them, or rebuild it with anvil build --quant");
    }
    return open_engine(a, ro);
  }

  OpenModel m;
  std::string path = a.model.empty() ? default_model_gguf() : a.model;
  if (a.model.empty() && !fs::exists(path)) {
    return not_found("no --model given and the default model is not at " + path +
                     "; fetch it with tools/fetch_default_model.sh or pass --model DIR");
  }
  if (path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0) {
    ANVIL_ASSIGN_OR_RETURN(path, import_gguf(path));
  }
  m.model_dir = path;
  BackendOptions bo;
  bo.kind = BackendKind::kCpu;
  if (a.backend == "cuda" || (a.backend == "auto" && cuda_available())) bo.kind = BackendKind::kCuda;
  bo.compute_dtype = a.dtype == "fp16" ? DType::kF16 : DType::kBF16;
  if (a.tp * a.pp > 1 && quantization_requested(a.quant)) {
    return unsupported("--quant / --kv-cache with --tp/--pp: ranks load --model DIR directly, without an engine build");
  }
  // A pre-quantized checkpoint's projections are imported by an engine build only; the direct
  // loads below read float weights.
  ANVIL_ASSIGN_OR_RETURN(const std::optional<PrequantScheme> prequant, read_prequant_scheme(path));
  const std::string prequant_what =
      prequant ? path + " is a pre-quantized " + prequant->description() + " checkpoint, which only an engine build imports" : "";
  if (a.tp * a.pp > 1 && prequant) {
    return unsupported("--tp/--pp load --model DIR directly, without an engine build; " + prequant_what);
  }
  if (a.tp * a.pp > 1) {
    // One rank of a parallel job: its communicators, its GPU (local rank), its layers and shards.
    ANVIL_RETURN_IF_ERROR(start_ranks_if_needed(a));
    ANVIL_ASSIGN_OR_RETURN(m.dist, dist::init_dist(a.tp, a.pp, bo.kind == BackendKind::kCuda));
    if (m.dist->cuda_device >= 0) bo.device_index = m.dist->cuda_device;
    ANVIL_ASSIGN_OR_RETURN(m.backend, create_backend(bo));
    ro.comm_control = m.dist->control.get();
    ro.comm_world = m.dist->world.get();
    ro.comm_tp = m.dist->tp.get();
    ANVIL_LOG_INFO("rank %d: loading %s directly (no engine cache with --tp/--pp)", m.dist->config.world_rank(), path.c_str());
    ANVIL_ASSIGN_OR_RETURN(m.runner, load_model(path, m.backend.get(), ro, m.dist->config));
    return m;
  }
  ANVIL_ASSIGN_OR_RETURN(m.backend, create_backend(bo));
  if (!a.engine_cache) {
    if (quantization_requested(a.quant)) {
      return invalid_argument("--quant / --kv-cache go through an engine build: drop --no-engine-cache");
    }
    if (prequant) return invalid_argument("--no-engine-cache: " + prequant_what + "; drop --no-engine-cache");
    ANVIL_ASSIGN_OR_RETURN(m.runner, load_model(path, m.backend.get(), ro));
    return m;
  }
  EngineBuildOptions eo;
  eo.backend = bo.kind;
  eo.dtype = m.backend->compute_dtype();
  eo.max_batch = a.max_num_seqs;
  eo.max_seq_len = a.max_seq_len;
  eo.max_num_tokens = a.max_num_tokens;
  eo.kv_block_size = a.block_size;
  CalibrationData calib;
  ANVIL_RETURN_IF_ERROR(apply_quant_args(a.quant, path, &eo, &calib));
  ANVIL_ASSIGN_OR_RETURN(CachedEngine cached, get_or_build_engine(default_engine_cache_dir(), path, eo, m.backend.get(), &calib));
  EngineLoadOptions lo;
  lo.verify_checksums = a.verify_checksums;
  ANVIL_ASSIGN_OR_RETURN(m.runner, load_engine(cached.path, m.backend.get(), ro, lo));
  return m;
}

}  // namespace anvil::cli
