// Engine header <-> JSON. Enums are written by name; floats round-trip exactly (a float widens to
// a double exactly and nlohmann prints doubles in shortest round-trip form).
#include "build/engine_json.h"

#include <cinttypes>
#include <cstdio>

namespace anvil {

using nlohmann::json;

namespace {

const char* family_name(ArchFamily f) {
  switch (f) {
    case ArchFamily::kLlama: return "llama";
    case ArchFamily::kMistral: return "mistral";
    case ArchFamily::kQwen2: return "qwen2";
    case ArchFamily::kQwen3: return "qwen3";
  }
  return "?";
}

const char* rope_type_name(RopeScalingType t) {
  switch (t) {
    case RopeScalingType::kNone: return "none";
    case RopeScalingType::kLinear: return "linear";
    case RopeScalingType::kLlama3: return "llama3";
  }
  return "?";
}

const char* tensor_kind_name(TensorKind k) {
  switch (k) {
    case TensorKind::kInput: return "input";
    case TensorKind::kWeight: return "weight";
    case TensorKind::kActivation: return "activation";
  }
  return "?";
}

const char* row_scale_name(RowScale r) {
  switch (r) {
    case RowScale::kTokens: return "tokens";
    case RowScale::kLogitRows: return "logit_rows";
  }
  return "?";
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::kSilu: return "silu";
    case Activation::kGeluTanh: return "gelu_tanh";
  }
  return "?";
}

// Finds the enum value whose name is `name` among `values`.
template <typename E, size_t N>
Result<E> enum_from(const std::string& name, const E (&values)[N], const char* (*to_name)(E), const std::string& what) {
  for (E v : values)
    if (name == to_name(v)) return v;
  return data_loss(what + " has unknown value '" + name + "'");
}

json shape_json(const Shape& s) {
  json a = json::array();
  for (int i = 0; i < s.rank; ++i) a.push_back(s[i]);
  return a;
}

Result<Shape> shape_from(const json& a, const std::string& what) {
  if (!a.is_array() || a.size() > static_cast<size_t>(Shape::kMaxDims)) return data_loss(what + ": bad shape");
  Shape s;
  for (const json& d : a) {
    const int64_t v = d.get<int64_t>();
    if (v < 0) return data_loss(what + ": negative dimension");
    s.dims[s.rank++] = v;
  }
  return s;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

Result<uint64_t> hex64_from(const std::string& s, const std::string& what) {
  if (s.size() != 16) return data_loss(what + ": checksum is not 16 hex digits");
  uint64_t v = 0;
  for (char c : s) {
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return data_loss(what + ": checksum is not 16 hex digits");
    v = v << 4 | static_cast<uint64_t>(d);
  }
  return v;
}

// The input count ModelRunner reads for each op (optional inputs are present as -1).
size_t op_arity(OpKind k) {
  switch (k) {
    case OpKind::kEmbedding: return 2;
    case OpKind::kRmsNorm: return 3;
    case OpKind::kLinear: return 3;
    case OpKind::kRopeKvWrite: return 4;
    case OpKind::kAttention: return 1;
    case OpKind::kActMul: return 1;
    case OpKind::kGatherRows: return 2;
    case OpKind::kQLinear: return 5;
    case OpKind::kAllReduce: return 1;
    case OpKind::kAllGather: return 1;
    case OpKind::kSend: return 1;
    case OpKind::kRecv: return 0;
  }
  return 0;
}

}  // namespace

const char* backend_kind_name(BackendKind k) {
  switch (k) {
    case BackendKind::kCpu: return "cpu";
    case BackendKind::kCuda: return "cuda";
  }
  return "?";
}

json model_spec_to_json(const ModelSpec& s) {
  json j;
  j["family"] = family_name(s.family);
  j["architecture"] = s.architecture;
  j["model_type"] = s.model_type;
  j["vocab_size"] = s.vocab_size;
  j["hidden_size"] = s.hidden_size;
  j["intermediate_size"] = s.intermediate_size;
  j["num_layers"] = s.num_layers;
  j["num_heads"] = s.num_heads;
  j["num_kv_heads"] = s.num_kv_heads;
  j["head_dim"] = s.head_dim;
  j["max_position_embeddings"] = s.max_position_embeddings;
  j["rms_norm_eps"] = s.rms_norm_eps;
  j["rope_theta"] = s.rope_theta;
  j["rope_scaling"] = {{"type", rope_type_name(s.rope_scaling.type)},
                       {"factor", s.rope_scaling.factor},
                       {"low_freq_factor", s.rope_scaling.low_freq_factor},
                       {"high_freq_factor", s.rope_scaling.high_freq_factor},
                       {"original_max_position_embeddings", s.rope_scaling.original_max_position_embeddings}};
  j["tie_word_embeddings"] = s.tie_word_embeddings;
  j["qkv_bias"] = s.qkv_bias;
  j["o_bias"] = s.o_bias;
  j["mlp_bias"] = s.mlp_bias;
  j["qk_norm"] = s.qk_norm;
  j["hidden_act"] = s.hidden_act;
  j["torch_dtype"] = s.torch_dtype;
  j["bos_token_id"] = s.bos_token_id;
  j["eos_token_ids"] = s.eos_token_ids;
  j["pad_token_id"] = s.pad_token_id;
  return j;
}

Result<ModelSpec> model_spec_from_json(const json& j, const std::string& origin) {
  try {
    static constexpr ArchFamily kFamilies[] = {ArchFamily::kLlama, ArchFamily::kMistral, ArchFamily::kQwen2,
                                               ArchFamily::kQwen3};
    static constexpr RopeScalingType kRope[] = {RopeScalingType::kNone, RopeScalingType::kLinear, RopeScalingType::kLlama3};
    ModelSpec s;
    ANVIL_ASSIGN_OR_RETURN(s.family, enum_from(j.at("family").get<std::string>(), kFamilies, family_name, origin + ": spec.family"));
    s.architecture = j.at("architecture").get<std::string>();
    s.model_type = j.at("model_type").get<std::string>();
    s.vocab_size = j.at("vocab_size").get<int64_t>();
    s.hidden_size = j.at("hidden_size").get<int64_t>();
    s.intermediate_size = j.at("intermediate_size").get<int64_t>();
    s.num_layers = j.at("num_layers").get<int64_t>();
    s.num_heads = j.at("num_heads").get<int64_t>();
    s.num_kv_heads = j.at("num_kv_heads").get<int64_t>();
    s.head_dim = j.at("head_dim").get<int64_t>();
    s.max_position_embeddings = j.at("max_position_embeddings").get<int64_t>();
    s.rms_norm_eps = j.at("rms_norm_eps").get<double>();
    s.rope_theta = j.at("rope_theta").get<double>();
    const json& r = j.at("rope_scaling");
    ANVIL_ASSIGN_OR_RETURN(s.rope_scaling.type,
                           enum_from(r.at("type").get<std::string>(), kRope, rope_type_name, origin + ": spec.rope_scaling.type"));
    s.rope_scaling.factor = r.at("factor").get<double>();
    s.rope_scaling.low_freq_factor = r.at("low_freq_factor").get<double>();
    s.rope_scaling.high_freq_factor = r.at("high_freq_factor").get<double>();
    s.rope_scaling.original_max_position_embeddings = r.at("original_max_position_embeddings").get<int64_t>();
    s.tie_word_embeddings = j.at("tie_word_embeddings").get<bool>();
    s.qkv_bias = j.at("qkv_bias").get<bool>();
    s.o_bias = j.at("o_bias").get<bool>();
    s.mlp_bias = j.at("mlp_bias").get<bool>();
    s.qk_norm = j.at("qk_norm").get<bool>();
    s.hidden_act = j.at("hidden_act").get<std::string>();
    s.torch_dtype = j.at("torch_dtype").get<std::string>();
    s.bos_token_id = j.at("bos_token_id").get<int64_t>();
    s.eos_token_ids = j.at("eos_token_ids").get<std::vector<int64_t>>();
    s.pad_token_id = j.at("pad_token_id").get<int64_t>();
    return s;
  } catch (const json::exception& e) {
    return data_loss(origin + ": model spec in the engine header is malformed (" + e.what() + "); rebuild with anvil build");
  }
}

json graph_to_json(const Graph& g) {
  json tensors = json::array();
  for (const GraphTensor& t : g.tensors()) {
    tensors.push_back({{"name", t.name},
                       {"kind", tensor_kind_name(t.kind)},
                       {"shape", shape_json(t.shape)},
                       {"rows", row_scale_name(t.rows)},
                       {"force_f32", t.force_f32},
                       {"is_int32", t.is_int32},
                       {"alias_of", t.alias_of}});
  }
  json nodes = json::array();
  for (const Node& n : g.nodes()) {
    nodes.push_back({{"op", op_kind_name(n.op)},
                     {"name", n.name},
                     {"inputs", n.inputs},
                     {"outputs", n.outputs},
                     {"attrs",
                      {{"eps", n.attrs.eps},
                       {"scale", n.attrs.scale},
                       {"attention_scaling", n.attrs.attention_scaling},
                       {"layer", n.attrs.layer},
                       {"act", activation_name(n.attrs.act)},
                       {"quant", quant_format_name(n.attrs.quant)},
                       {"group_size", n.attrs.group_size}}}});
  }
  return {{"tensors", tensors}, {"nodes", nodes}, {"outputs", g.outputs()}};
}

Result<Graph> graph_from_json(const json& j, const std::string& origin) {
  static constexpr TensorKind kKinds[] = {TensorKind::kInput, TensorKind::kWeight, TensorKind::kActivation};
  static constexpr RowScale kRows[] = {RowScale::kTokens, RowScale::kLogitRows};
  static constexpr OpKind kOps[] = {OpKind::kEmbedding, OpKind::kRmsNorm,  OpKind::kLinear,    OpKind::kRopeKvWrite,
                                    OpKind::kAttention, OpKind::kActMul, OpKind::kGatherRows, OpKind::kQLinear,
                                    OpKind::kAllReduce, OpKind::kAllGather, OpKind::kSend, OpKind::kRecv};
  static constexpr Activation kActs[] = {Activation::kSilu, Activation::kGeluTanh};
  static constexpr QuantFormat kQuants[] = {QuantFormat::kInt8WeightOnly, QuantFormat::kInt4Group, QuantFormat::kInt8W8A8,
                                            QuantFormat::kFp8W8A8};
  const std::string where = origin + ": graph";
  try {
    Graph g;
    const json& tensors = j.at("tensors");
    const int num_tensors = static_cast<int>(tensors.size());
    for (const json& tj : tensors) {
      GraphTensor t;
      t.name = tj.at("name").get<std::string>();
      ANVIL_ASSIGN_OR_RETURN(t.kind, enum_from(tj.at("kind").get<std::string>(), kKinds, tensor_kind_name, where + " tensor " + t.name));
      ANVIL_ASSIGN_OR_RETURN(t.shape, shape_from(tj.at("shape"), where + " tensor " + t.name));
      ANVIL_ASSIGN_OR_RETURN(t.rows, enum_from(tj.at("rows").get<std::string>(), kRows, row_scale_name, where + " tensor " + t.name));
      t.force_f32 = tj.at("force_f32").get<bool>();
      t.is_int32 = tj.at("is_int32").get<bool>();
      t.alias_of = tj.at("alias_of").get<int>();
      if (t.alias_of < -1 || t.alias_of >= num_tensors) return data_loss(where + " tensor " + t.name + " aliases a tensor id out of range");
      g.add_tensor(t);
    }
    auto ids_ok = [&](const std::vector<int>& ids, bool allow_absent) {
      for (int id : ids)
        if (id < (allow_absent ? -1 : 0) || id >= num_tensors) return false;
      return true;
    };
    for (const json& nj : j.at("nodes")) {
      Node n;
      n.name = nj.at("name").get<std::string>();
      ANVIL_ASSIGN_OR_RETURN(n.op, enum_from(nj.at("op").get<std::string>(), kOps, op_kind_name, where + " op " + n.name));
      n.inputs = nj.at("inputs").get<std::vector<int>>();
      n.outputs = nj.at("outputs").get<std::vector<int>>();
      if (n.inputs.size() != op_arity(n.op)) {
        return data_loss(where + " op " + n.name + " has " + std::to_string(n.inputs.size()) + " inputs; " +
                         op_kind_name(n.op) + " takes " + std::to_string(op_arity(n.op)));
      }
      if (!ids_ok(n.inputs, true) || !ids_ok(n.outputs, false) || n.outputs.empty()) {
        return data_loss(where + " op " + n.name + " refers to a tensor id out of range");
      }
      const json& a = nj.at("attrs");
      n.attrs.eps = static_cast<float>(a.at("eps").get<double>());
      n.attrs.scale = static_cast<float>(a.at("scale").get<double>());
      n.attrs.attention_scaling = static_cast<float>(a.at("attention_scaling").get<double>());
      n.attrs.layer = a.at("layer").get<int32_t>();
      ANVIL_ASSIGN_OR_RETURN(n.attrs.act, enum_from(a.at("act").get<std::string>(), kActs, activation_name, where + " op " + n.name));
      ANVIL_ASSIGN_OR_RETURN(n.attrs.quant, enum_from(a.at("quant").get<std::string>(), kQuants, quant_format_name, where + " op " + n.name));
      n.attrs.group_size = a.at("group_size").get<int32_t>();
      if (n.attrs.group_size < 0 || n.attrs.group_size > 4096) return data_loss(where + " op " + n.name + " has a bad group_size");
      g.add_node(std::move(n));
    }
    const std::vector<int> outputs = j.at("outputs").get<std::vector<int>>();
    if (outputs.empty() || !ids_ok(outputs, false)) return data_loss(where + " has no valid output tensor");
    for (int o : outputs) g.mark_output(o);
    return g;
  } catch (const json::exception& e) {
    return data_loss(where + " in the engine header is malformed (" + e.what() + "); rebuild with anvil build");
  }
}

json build_options_to_json(const EngineBuildOptions& o) {
  return {{"backend", backend_kind_name(o.backend)},
          {"dtype", std::string(dtype_name(o.dtype))},
          {"max_batch", o.max_batch},
          {"max_seq_len", o.max_seq_len},
          {"max_num_tokens", o.max_num_tokens},
          {"kv_block_size", o.kv_block_size},
          {"cuda_arch", o.cuda_arch},
          {"quant", quant_method_name(o.quant)},
          {"group_size", o.group_size},
          {"kv_cache_dtype", std::string(dtype_name(o.kv_cache_dtype))},
          {"calib_file", o.calib_file},
          {"calib_samples", o.calib_samples}};
}

json engine_header_to_json(const EngineHeader& h) {
  json weights = json::array();
  for (const EngineWeight& w : h.weights) {
    weights.push_back({{"name", w.name},
                       {"dtype", std::string(dtype_name(w.dtype))},
                       {"shape", shape_json(w.shape)},
                       {"offset", w.offset},
                       {"bytes", w.bytes},
                       {"xxh64", hex64(w.checksum)},
                       {"packed_from", w.packed_from},
                       {"computed", w.computed}});
  }
  json packed = json::array();
  for (const EngineWeight& w : h.weights)
    if (w.packed_from.size() > 1) packed.push_back({{"weight", w.name}, {"from", w.packed_from}});
  json tuning = json::array();
  for (const GemmTuning& t : h.gemm_tuning) {
    tuning.push_back({{"m_bucket", t.m_bucket}, {"n", t.n}, {"k", t.k}, {"out_dtype", t.out_dtype}, {"has_bias", t.has_bias},
                      {"candidates", t.candidates}, {"best_us", t.best_us}, {"heuristic_us", t.heuristic_us},
                      {"algo", t.algo}, {"cublaslt_version", t.cublaslt_version}});
  }
  json j;
  j["anvil_version"] = h.anvil_version;
  j["format_version"] = kEngineFormatVersion;
  j["source_model_dir"] = h.source_model_dir;
  j["target"] = {{"backend", backend_kind_name(h.options.backend)}, {"gpu_arch", h.gpu_arch}, {"device", h.device_name}};
  j["spec"] = model_spec_to_json(h.spec);
  j["build_options"] = build_options_to_json(h.options);
  j["graph"] = graph_to_json(h.graph);
  j["weights"] = weights;
  j["passes"] = {
      {"weight_packing", packed},
      {"dead_tensor_elimination",
       {{"ops_removed", h.dce_ops_removed}, {"tensors_removed", h.dce_tensors_removed}, {"weights_removed", h.dce_weights_removed}}},
      {"memory_plan",
       {{"max_tokens", h.plan_max_tokens},
        {"max_logit_rows", h.plan_max_logit_rows},
        {"elem_bytes", h.plan_elem_bytes},
        {"arena_bytes", h.plan.arena_bytes},
        {"unplanned_bytes", h.plan.unplanned_bytes},
        {"offsets", h.plan.offsets}}},
      {"gemm_autotune", {{"status", h.gemm_tuning_status}, {"entries", tuning}}}};
  return j;
}

Result<EngineHeader> engine_header_from_json(const json& j, const std::string& origin) {
  try {
    EngineHeader h;
    h.anvil_version = j.at("anvil_version").get<std::string>();
    h.source_model_dir = j.at("source_model_dir").get<std::string>();
    const json& target = j.at("target");
    h.gpu_arch = target.at("gpu_arch").get<std::string>();
    h.device_name = target.at("device").get<std::string>();
    ANVIL_ASSIGN_OR_RETURN(h.spec, model_spec_from_json(j.at("spec"), origin));
    const json& o = j.at("build_options");
    static constexpr BackendKind kKinds[] = {BackendKind::kCpu, BackendKind::kCuda};
    ANVIL_ASSIGN_OR_RETURN(h.options.backend, enum_from(o.at("backend").get<std::string>(), kKinds, backend_kind_name,
                                                        origin + ": build_options.backend"));
    auto dt = dtype_from_name(o.at("dtype").get<std::string>());
    if (!dt) return data_loss(origin + ": build_options.dtype is unknown");
    h.options.dtype = *dt;
    h.options.max_batch = o.at("max_batch").get<int32_t>();
    h.options.max_seq_len = o.at("max_seq_len").get<int32_t>();
    h.options.max_num_tokens = o.at("max_num_tokens").get<int32_t>();
    h.options.kv_block_size = o.at("kv_block_size").get<int32_t>();
    h.options.cuda_arch = o.at("cuda_arch").get<int32_t>();
    // Quantization fields: absent in engines written before them (unquantized, KV cache in the
    // compute dtype).
    Result<QuantMethod> quant = quant_method_from_name(o.value("quant", std::string("none")));
    if (!quant.is_ok()) return data_loss(origin + ": build_options.quant is unknown (" + quant.status().message() + ")");
    h.options.quant = *quant;
    h.options.group_size = o.value("group_size", h.options.quant == QuantMethod::kNone ? 0 : h.options.group_size);
    auto kv = dtype_from_name(o.value("kv_cache_dtype", std::string(dtype_name(h.options.dtype))));
    if (!kv) return data_loss(origin + ": build_options.kv_cache_dtype is unknown");
    h.options.kv_cache_dtype = *kv;
    h.options.calib_file = o.value("calib_file", std::string());
    h.options.calib_samples = o.value("calib_samples", h.options.calib_samples);
    ANVIL_ASSIGN_OR_RETURN(h.graph, graph_from_json(j.at("graph"), origin));
    for (const json& wj : j.at("weights")) {
      EngineWeight w;
      w.name = wj.at("name").get<std::string>();
      auto wdt = dtype_from_name(wj.at("dtype").get<std::string>());
      if (!wdt) return data_loss(origin + ": weight " + w.name + " has an unknown dtype");
      w.dtype = *wdt;
      ANVIL_ASSIGN_OR_RETURN(w.shape, shape_from(wj.at("shape"), origin + ": weight " + w.name));
      w.offset = wj.at("offset").get<uint64_t>();
      w.bytes = wj.at("bytes").get<uint64_t>();
      ANVIL_ASSIGN_OR_RETURN(w.checksum, hex64_from(wj.at("xxh64").get<std::string>(), origin + ": weight " + w.name));
      w.packed_from = wj.at("packed_from").get<std::vector<std::string>>();
      w.computed = wj.at("computed").get<bool>();
      h.weights.push_back(std::move(w));
    }
    const json& passes = j.at("passes");
    const json& dce = passes.at("dead_tensor_elimination");
    h.dce_ops_removed = dce.at("ops_removed").get<int32_t>();
    h.dce_tensors_removed = dce.at("tensors_removed").get<int32_t>();
    h.dce_weights_removed = dce.at("weights_removed").get<std::vector<std::string>>();
    const json& plan = passes.at("memory_plan");
    h.plan_max_tokens = plan.at("max_tokens").get<int64_t>();
    h.plan_max_logit_rows = plan.at("max_logit_rows").get<int64_t>();
    h.plan_elem_bytes = plan.at("elem_bytes").get<int64_t>();
    h.plan.arena_bytes = plan.at("arena_bytes").get<int64_t>();
    h.plan.unplanned_bytes = plan.at("unplanned_bytes").get<int64_t>();
    h.plan.offsets = plan.at("offsets").get<std::vector<int64_t>>();
    const json& tune = passes.at("gemm_autotune");
    h.gemm_tuning_status = tune.at("status").get<std::string>();
    for (const json& t : tune.at("entries")) {
      GemmTuning g;
      g.m_bucket = t.at("m_bucket").get<int64_t>();
      g.n = t.at("n").get<int64_t>();
      g.k = t.at("k").get<int64_t>();
      g.out_dtype = t.at("out_dtype").get<std::string>();
      g.has_bias = t.at("has_bias").get<bool>();
      g.candidates = t.at("candidates").get<int>();
      g.best_us = t.at("best_us").get<double>();
      g.heuristic_us = t.at("heuristic_us").get<double>();
      g.algo = t.value("algo", std::string());  // absent in engines from before it was recorded
      g.cublaslt_version = t.value("cublaslt_version", int64_t{0});
      if (!g.algo.empty() && g.algo.size() != 128) return data_loss(origin + ": gemm_autotune entry has a malformed algo");
      h.gemm_tuning.push_back(g);
    }
    return h;
  } catch (const json::exception& e) {
    return data_loss(origin + ": engine header is malformed (" + std::string(e.what()) + "); rebuild with anvil build");
  }
}

}  // namespace anvil
