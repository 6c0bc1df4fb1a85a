// ModelRunner: memory planning at creation, then a plain interpreter over the op list.
#include "runtime/model_runner.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/kv_quant.h"
#include "core/logging.h"

namespace anvil {

Result<std::unique_ptr<ModelRunner>> ModelRunner::create(Backend* backend, ModelDefinition def, WeightStore weights,
                                                         const RunnerOptions& options) {
  std::unique_ptr<ModelRunner> r(new ModelRunner());
  r->backend_ = backend;
  r->def_ = std::move(def);
  r->weights_ = std::move(weights);
  r->options_ = options;
  RunnerOptions& o = r->options_;
  const ModelSpec& spec = r->def_.spec;
  if (o.max_num_tokens <= 0 || o.max_num_seqs <= 0) return invalid_argument("max_num_tokens and max_num_seqs must be positive");
  if (o.max_logit_rows <= 0) o.max_logit_rows = o.max_num_seqs;
  if (o.max_seq_len <= 0) o.max_seq_len = static_cast<int32_t>(spec.max_position_embeddings);
  if (o.max_seq_len <= 0) return invalid_argument("max_seq_len is unknown: config.json has no max_position_embeddings");
  if (o.block_size <= 0 || (o.block_size & (o.block_size - 1))) return invalid_argument("block_size must be a power of two");
  r->max_blocks_per_seq_ = (o.max_seq_len + o.block_size - 1) / o.block_size;
  r->graphs_supported_ = backend->device() == Device::kCuda;
  ANVIL_ASSIGN_OR_RETURN(r->rank_, dist::plan_rank(model_dims(spec), r->def_.parallel));
  if (r->distributed()) ANVIL_RETURN_IF_ERROR(r->init_distributed());
  // This rank's KV cache: its stage's layers, its KV heads.
  ModelSpec kv_spec = spec;
  kv_spec.num_kv_heads = r->rank_.num_kv_heads;
  kv_spec.num_layers = r->rank_.layer_end - r->rank_.layer_begin;

  // Weights by tensor id.
  const Graph& g = r->def_.graph;
  r->weight_of_.resize(g.tensors().size());
  for (size_t id = 0; id < g.tensors().size(); ++id) {
    const GraphTensor& t = g.tensors()[id];
    if (t.kind != TensorKind::kWeight) continue;
    Tensor w = r->weights_.get(t.name);
    if (!w.defined()) return internal_error("graph weight '" + t.name + "' was not loaded");
    if (!(w.shape == t.shape)) return internal_error("weight '" + t.name + "' shape mismatch with the graph");
    r->weight_of_[id] = w;
  }
  for (const Node& n : g.nodes()) {
    if (n.op == OpKind::kQLinear) ANVIL_RETURN_IF_ERROR(r->check_qlinear(n));
  }

  // Activations.
  r->plan_ = plan_memory(g, o.max_num_tokens, o.max_logit_rows, dtype_size(backend->compute_dtype()));
  ANVIL_ASSIGN_OR_RETURN(r->arena_, DeviceBuffer::create(backend, static_cast<size_t>(r->plan_.arena_bytes)));
  ANVIL_LOG_INFO("activations: %.1f MiB planned (%.1f MiB without reuse) for %d tokens/step",
                 r->plan_.arena_bytes / 1048576.0, r->plan_.unplanned_bytes / 1048576.0, o.max_num_tokens);

  // Metadata buffer layout.
  size_t off = 0;
  auto take = [&](size_t n) {
    size_t at = off;
    off += (n + 63) / 64 * 64;  // 256-byte aligned sections
    return at;
  };
  r->off_ids_ = take(o.max_num_tokens);
  r->off_pos_ = take(o.max_num_tokens);
  r->off_starts_ = take(o.max_num_seqs + 1);
  r->off_ctx_ = take(o.max_num_seqs);
  r->off_slots_ = take(o.max_num_tokens);
  r->off_rows_ = take(o.max_logit_rows);
  r->off_tables_ = take(static_cast<size_t>(o.max_num_seqs) * r->max_blocks_per_seq_);
  r->meta_host_.assign(off, 0);
  ANVIL_ASSIGN_OR_RETURN(r->meta_, DeviceBuffer::create(backend, off * sizeof(int32_t)));

  // KV cache: what is left after weights and activations.
  const DType kv_dtype = o.kv_dtype.value_or(backend->compute_dtype());
  std::vector<KvLayerScales> kv_scales;
  if (kv_dtype_quantized(kv_dtype) && r->distributed()) {
    return unsupported("a quantized KV cache (" + std::string(dtype_name(kv_dtype)) + ") with --tp/--pp");
  }
  if (kv_dtype_quantized(kv_dtype)) {
    ANVIL_ASSIGN_OR_RETURN(kv_scales, r->kv_scales(kv_dtype));
  } else if (kv_dtype != backend->compute_dtype()) {
    return invalid_argument("kv cache dtype " + std::string(dtype_name(kv_dtype)) + ": " + backend->name() +
                            " stores the KV cache in " + std::string(dtype_name(backend->compute_dtype())) +
                            ", f8e4m3 or i8");
  }
  int32_t blocks = o.num_kv_blocks;
  const size_t per_block = KvCache::bytes_per_block(kv_spec, o.block_size, kv_dtype);
  if (blocks <= 0) {
    ANVIL_ASSIGN_OR_RETURN(MemoryInfo mem, backend->memory_info());
    double budget = static_cast<double>(mem.free_bytes) * o.kv_memory_fraction;
    int64_t cap = o.max_kv_bytes;
    if (cap <= 0 && backend->device() == Device::kCpu) cap = int64_t{2} << 30;
    if (cap > 0) budget = std::min(budget, static_cast<double>(cap));
    blocks = static_cast<int32_t>(std::min<double>(budget / static_cast<double>(per_block), 1 << 30));
    // Never more than every sequence at full length needs.
    blocks = std::min<int64_t>(blocks, static_cast<int64_t>(r->max_blocks_per_seq_) * o.max_num_seqs + 1);
  }
  if (blocks < r->max_blocks_per_seq_ && blocks < 4) {
    return out_of_memory("not enough memory for the KV cache: " + std::to_string(blocks) +
                         " blocks fit; lower --max-num-tokens or free device memory");
  }
  ANVIL_ASSIGN_OR_RETURN(r->kv_, KvCache::create(backend, kv_spec, blocks, o.block_size, kv_dtype, kv_scales));
  ANVIL_LOG_INFO("kv cache: %d blocks of %d tokens (%lld tokens, %.1f MiB, %s)", blocks, o.block_size,
                 static_cast<long long>(blocks) * o.block_size, blocks * per_block / 1048576.0,
                 std::string(dtype_name(kv_dtype)).c_str());
  return r;
}

Result<std::vector<KvLayerScales>> ModelRunner::kv_scales(DType kv_dtype) const {
  const ModelSpec& spec = def_.spec;
  std::vector<KvLayerScales> out;
  std::vector<float> host(static_cast<size_t>(spec.num_kv_heads));
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    const float* ptr[2] = {nullptr, nullptr};
    for (int kv = 0; kv < 2; ++kv) {
      const std::string name = "layers." + std::to_string(l) + (kv == 0 ? ".attn.k_scale" : ".attn.v_scale");
      const Tensor w = weights_.get(name);
      if (!w.defined()) {
        return invalid_argument("kv cache " + std::string(dtype_name(kv_dtype)) + " needs per-layer scales, but weight '" +
                                name + "' is missing: build the engine with --kv-cache fp8|int8 (calibrates them)");
      }
      if (w.dtype != DType::kF32 || w.numel() != spec.num_kv_heads) {
        return invalid_argument("kv cache scale '" + name + "' must be f32 [" + std::to_string(spec.num_kv_heads) +
                                "], got " + std::string(dtype_name(w.dtype)) + " " + w.shape.to_string());
      }
      ANVIL_RETURN_IF_ERROR(backend_->copy_d2h(host.data(), w.data, host.size() * sizeof(float)));
      for (size_t h = 0; h < host.size(); ++h) {
        if (!(host[h] > 0.0f) || !std::isfinite(host[h])) {
          return invalid_argument("kv cache scale '" + name + "' [" + std::to_string(h) + "] = " + std::to_string(host[h]) +
                                  " (scales must be positive and finite)");
        }
      }
      ptr[kv] = static_cast<const float*>(w.data);
    }
    out.push_back({ptr[0], ptr[1]});
  }
  return out;
}

// A qlinear's weights must have the dtypes and shapes its format's kernels read (backend.h
// QuantFormat): a mismatched engine is an error here, never an out-of-bounds read later.
Status ModelRunner::check_qlinear(const Node& n) const {
  const Graph& g = def_.graph;
  const std::string what = "qlinear '" + n.name + "' (" + quant_format_name(n.attrs.quant) + ")";
  auto weight = [&](int i) -> Tensor {
    const int id = n.inputs[i];
    return id >= 0 && g.tensor(id).kind == TensorKind::kWeight ? weight_of_[id] : Tensor();
  };
  const Tensor q = weight(1), bias = weight(2), scales = weight(3), offsets = weight(4);
  if (!q.defined() || !scales.defined() || q.rank() != 2) return data_loss(what + ": needs a [N, K] qweight and scales");
  if (n.inputs[2] >= 0 && !bias.defined()) return data_loss(what + ": its bias is not a weight");
  const int64_t rows = q.dim(0);
  const bool int4 = n.attrs.quant == QuantFormat::kInt4Group;
  const int64_t k = int4 ? q.dim(1) * 2 : q.dim(1);
  DType want = DType::kI8;
  switch (n.attrs.quant) {
    case QuantFormat::kInt8WeightOnly:
    case QuantFormat::kInt8W8A8: want = DType::kI8; break;
    case QuantFormat::kFp8W8A8: want = DType::kF8E4M3; break;
    case QuantFormat::kInt4Group: want = DType::kU8; break;
  }
  if (q.dtype != want) {
    return data_loss(what + ": qweight is " + std::string(dtype_name(q.dtype)) + ", the format stores " +
                     std::string(dtype_name(want)));
  }
  if (int4) {
    const int32_t gs = n.attrs.group_size;
    if (gs <= 0 || gs % 2 != 0 || k % gs != 0) {
      return data_loss(what + ": group_size " + std::to_string(gs) + " does not divide K=" + std::to_string(k));
    }
    const int64_t groups = rows * (k / gs);
    if (scales.dtype != DType::kF16 || scales.numel() != groups || !offsets.defined() || offsets.dtype != DType::kF16 ||
        offsets.numel() != groups) {
      return data_loss(what + ": scales and offsets must be f16 [" + std::to_string(rows) + ", " + std::to_string(k / gs) + "]");
    }
  } else if (scales.dtype != DType::kF32 || scales.numel() != rows || offsets.defined() || n.inputs[4] >= 0) {
    return data_loss(what + ": scales must be f32 [" + std::to_string(rows) + "] and there are no offsets");
  }
  if (bias.defined() && bias.numel() != rows) return data_loss(what + ": bias does not have N=" + std::to_string(rows) + " values");
  return Status::ok();
}

Status ModelRunner::upload(const StepInput& s, int32_t pad_to, BatchView* v, int32_t* num_logit_rows) {
  const RunnerOptions& o = options_;
  const int32_t t = static_cast<int32_t>(s.token_ids.size());
  const int32_t n = static_cast<int32_t>(s.context_lens.size());
  const int32_t rows = static_cast<int32_t>(s.logit_rows.size());
  if (t <= 0 || t > o.max_num_tokens) return invalid_argument("step has " + std::to_string(t) + " tokens; the runner takes 1.." + std::to_string(o.max_num_tokens));
  if (n <= 0 || n > o.max_num_seqs) return invalid_argument("step has " + std::to_string(n) + " sequences; the runner takes 1.." + std::to_string(o.max_num_seqs));
  if (rows > o.max_logit_rows) return invalid_argument("step asks for " + std::to_string(rows) + " logit rows; max_logit_rows is " + std::to_string(o.max_logit_rows));
  if (s.positions.size() != static_cast<size_t>(t) || s.slot_map.size() != static_cast<size_t>(t) ||
      s.seq_starts.size() != static_cast<size_t>(n + 1) || s.block_tables.size() != static_cast<size_t>(n)) {
    return invalid_argument("step input arrays have inconsistent lengths");
  }
  int32_t max_q = 0, max_ctx = 0;
  for (int32_t i = 0; i < n; ++i) {
    const int32_t q = s.seq_starts[i + 1] - s.seq_starts[i];
    if (q <= 0 || s.context_lens[i] < q) return invalid_argument("sequence " + std::to_string(i) + " has a bad query or context length");
    if (s.context_lens[i] > o.max_seq_len) return invalid_argument("sequence " + std::to_string(i) + " is longer than max_seq_len");
    if (static_cast<int64_t>(s.block_tables[i].size()) * o.block_size < s.context_lens[i] ||
        static_cast<int32_t>(s.block_tables[i].size()) > max_blocks_per_seq_) {
      return invalid_argument("sequence " + std::to_string(i) + " has a block table that does not cover its context");
    }
    max_q = std::max(max_q, q);
    max_ctx = std::max(max_ctx, s.context_lens[i]);
  }
  int32_t* h = meta_host_.data();
  std::copy(s.token_ids.begin(), s.token_ids.end(), h + off_ids_);
  std::copy(s.positions.begin(), s.positions.end(), h + off_pos_);
  std::copy(s.seq_starts.begin(), s.seq_starts.end(), h + off_starts_);
  std::copy(s.context_lens.begin(), s.context_lens.end(), h + off_ctx_);
  std::copy(s.slot_map.begin(), s.slot_map.end(), h + off_slots_);
  std::copy(s.logit_rows.begin(), s.logit_rows.end(), h + off_rows_);
  for (int32_t i = 0; i < n; ++i) {
    int32_t* row = h + off_tables_ + static_cast<size_t>(i) * max_blocks_per_seq_;
    std::copy(s.block_tables[i].begin(), s.block_tables[i].end(), row);
    std::fill(row + s.block_tables[i].size(), row + max_blocks_per_seq_, 0);
  }
  // Padding of a decode-only step up to a graph bucket: one-token dummy sequences at position 0
  // that write nothing (slot -1) and read block 0.
  const int32_t total = std::max(n, pad_to);
  for (int32_t i = n; i < total; ++i) {
    h[off_ids_ + i] = 0;
    h[off_pos_ + i] = 0;
    h[off_slots_ + i] = -1;
    h[off_starts_ + i + 1] = i + 1;
    h[off_ctx_ + i] = 1;
    h[off_rows_ + i] = i;
    int32_t* row = h + off_tables_ + static_cast<size_t>(i) * max_blocks_per_seq_;
    std::fill(row, row + max_blocks_per_seq_, 0);
  }
  const size_t used = off_tables_ + static_cast<size_t>(total) * max_blocks_per_seq_;
  ANVIL_RETURN_IF_ERROR(backend_->copy_h2d(meta_.get(), h, used * sizeof(int32_t)));
  auto* d = static_cast<int32_t*>(meta_.get());
  v->num_tokens = t + (total - n);
  v->num_seqs = total;
  v->max_query_len = max_q;
  v->max_context_len = max_ctx;
  v->max_blocks_per_seq = max_blocks_per_seq_;
  v->token_ids = d + off_ids_;
  v->positions = d + off_pos_;
  v->seq_starts = d + off_starts_;
  v->context_lens = d + off_ctx_;
  v->slot_map = d + off_slots_;
  v->logit_rows = d + off_rows_;
  v->block_tables = d + off_tables_;
  *num_logit_rows = rows + (total - n);
  return Status::ok();
}

Tensor ModelRunner::activation(int id, int64_t num_tokens, int64_t num_logit_rows) const {
  const GraphTensor& t = def_.graph.tensor(id);
  const int64_t rows = t.rows == RowScale::kTokens ? num_tokens : num_logit_rows;
  Shape s;
  s.rank = t.shape.rank + 1;
  s.dims[0] = rows;
  for (int i = 0; i < t.shape.rank; ++i) s.dims[i + 1] = t.shape[i];
  if (t.kind == TensorKind::kInput) {
    auto* d = static_cast<int32_t*>(meta_.get());
    int32_t* p = t.name == "token_ids" ? d + off_ids_ : d + off_rows_;
    return Tensor(p, DType::kI32, s, backend_->device());
  }
  const DType dt = t.force_f32 ? DType::kF32 : backend_->compute_dtype();
  return Tensor(static_cast<uint8_t*>(arena_.get()) + plan_.offsets[id], dt, s, backend_->device());
}

Status ModelRunner::run_node(const Node& n, const BatchView& view, int64_t nt, int64_t nr) {
  auto in = [&](int i) -> Tensor {
    const int id = n.inputs[i];
    if (id < 0) return Tensor();
    const GraphTensor& t = def_.graph.tensor(id);
    if (t.kind == TensorKind::kWeight) return weight_of_[id];
    return activation(id, nt, nr);
  };
  auto out = [&](int i) { return activation(n.outputs[i], nt, nr); };
  switch (n.op) {
    case OpKind::kEmbedding: return backend_->embedding(in(0), in(1), out(0));
    case OpKind::kRmsNorm: {
      Tensor residual = in(1);
      return backend_->rms_norm(in(0), residual, in(2), n.attrs.eps, out(0));
    }
    case OpKind::kLinear: return backend_->linear(in(0), in(1), in(2), out(0));
    case OpKind::kRopeKvWrite: {
      const ModelSpec& s = def_.spec;
      Tensor q = out(0).view({nt, rank_.num_heads, s.head_dim});
      Tensor qkv = in(0);
      return backend_->rope_kv_write(qkv, in(1), in(2), n.attrs.eps, in(3), n.attrs.attention_scaling, view, q,
                                     kv_.layer(n.attrs.layer - static_cast<int32_t>(rank_.layer_begin)));
    }
    case OpKind::kAttention: {
      const ModelSpec& s = def_.spec;
      Tensor q = in(0).view({nt, rank_.num_heads, s.head_dim});
      Tensor o = out(0).view({nt, rank_.num_heads, s.head_dim});
      return backend_->attention(q, kv_.layer(n.attrs.layer - static_cast<int32_t>(rank_.layer_begin)), view, n.attrs.scale, o);
    }
    case OpKind::kActMul: return backend_->act_mul(in(0), n.attrs.act, out(0));
    case OpKind::kGatherRows: return backend_->gather_rows(in(0), in(1), out(0));
    case OpKind::kQLinear: {
      const Tensor data = in(1);
      QuantizedWeight w;
      w.format = n.attrs.quant;
      w.group_size = n.attrs.group_size;
      w.n = data.dim(0);
      w.k = w.format == QuantFormat::kInt4Group ? data.dim(1) * 2 : data.dim(1);
      w.data = data.data;
      w.scales = in(3).data;
      const Tensor offsets = in(4);
      w.offsets = offsets.defined() ? offsets.data : nullptr;
      return backend_->linear_quantized(in(0), w, in(2), out(0));
    }
    case OpKind::kAllReduce:
    case OpKind::kAllGather:
    case OpKind::kSend:
    case OpKind::kRecv: return run_collective(n, nt, nr);
  }
  return internal_error("unknown op");
}

Status ModelRunner::dump(const Node& n, int64_t nt, int64_t nr) {
  for (int id : n.outputs) {
    const std::string& name = def_.graph.tensor(id).name;
    if (!dump_names_.count(name)) continue;
    Tensor t = activation(id, nt, nr);
    std::vector<uint8_t> raw(t.nbytes());
    ANVIL_RETURN_IF_ERROR(backend_->copy_d2h(raw.data(), t.data, raw.size()));
    DumpedTensor d;
    d.shape = t.shape;
    d.data.resize(static_cast<size_t>(t.numel()));
    convert_to_f32(t.dtype, raw.data(), d.data.data(), d.data.size());
    dumps_[name] = std::move(d);
  }
  return Status::ok();
}

Status ModelRunner::run_nodes(const BatchView& view, int32_t rows) {
  for (const Node& n : def_.graph.nodes()) {
    Status st = run_node(n, view, view.num_tokens, rows);
    if (!st.is_ok()) return st.with_context(std::string(op_kind_name(n.op)) + " '" + n.name + "'");
    if (!dump_names_.empty()) ANVIL_RETURN_IF_ERROR(dump(n, view.num_tokens, rows));
    if (stop_after_dumps_ && dumps_.size() == dump_names_.size()) return Status::ok();
  }
  return Status::ok();
}

int32_t ModelRunner::graph_bucket(int32_t n) const {
  int32_t b = n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : (n + 7) / 8 * 8;
  return b <= options_.max_num_seqs && b <= options_.max_num_tokens && b <= options_.max_logit_rows ? b : -1;
}

Status ModelRunner::forward_graph(const StepInput& step, Tensor* logits, bool* used) {
  *used = false;
  const int32_t n = static_cast<int32_t>(step.context_lens.size());
  if (!options_.use_graphs || !graphs_supported_ || !dump_names_.empty()) return Status::ok();
  if (static_cast<int32_t>(step.token_ids.size()) != n || static_cast<int32_t>(step.logit_rows.size()) != n) return Status::ok();
  for (int32_t i = 0; i < n; ++i)
    if (step.logit_rows[i] != i) return Status::ok();
  const int32_t bucket = graph_bucket(n);
  if (bucket < 0) return Status::ok();
  // Pad to the bucket in the metadata buffer (no copy of the step).
  BatchView view;
  int32_t rows = 0;
  ANVIL_RETURN_IF_ERROR(upload(step, bucket, &view, &rows));
  // Hints fixed per bucket, so the captured launch shapes stay valid for every replay.
  view.max_query_len = 1;
  view.max_context_len = options_.max_seq_len;
  auto it = graph_of_bucket_.find(bucket);
  if (it == graph_of_bucket_.end()) {
    // One eager run first: lets every op size its scratch and pick its algorithms outside capture.
    ANVIL_RETURN_IF_ERROR(run_nodes(view, rows));
    Status st = backend_->begin_capture();
    if (st.code() == StatusCode::kUnsupported) {
      graphs_supported_ = false;
      *logits = activation(def_.graph.outputs()[0], n, n);
      *used = true;  // the eager run above already did this step
      return Status::ok();
    }
    ANVIL_RETURN_IF_ERROR(st);
    Status run = run_nodes(view, rows);
    Result<int> id = backend_->end_capture();
    ANVIL_RETURN_IF_ERROR(run.with_context("capturing the decode graph for batch " + std::to_string(bucket)));
    if (!id.is_ok()) return id.status();
    graph_of_bucket_[bucket] = *id;
    ANVIL_LOG_DEBUG("captured decode graph for batch size %d", bucket);
    it = graph_of_bucket_.find(bucket);
  }
  ANVIL_RETURN_IF_ERROR(backend_->replay(it->second));
  Tensor full = activation(def_.graph.outputs()[0], bucket, bucket);
  *logits = full.rows(0, n);
  *used = true;
  return Status::ok();
}

Status ModelRunner::forward(const StepInput& step, Tensor* logits) {
  dumps_.clear();
  if (distributed()) return forward_distributed(step, logits);
  bool used = false;
  ANVIL_RETURN_IF_ERROR(forward_graph(step, logits, &used));
  if (used) return Status::ok();
  BatchView view;
  int32_t rows = 0;
  ANVIL_RETURN_IF_ERROR(upload(step, 0, &view, &rows));
  ANVIL_RETURN_IF_ERROR(run_nodes(view, rows));
  if (stop_after_dumps_ && dumps_.size() == dump_names_.size()) {
    *logits = Tensor{};  // the graph stopped after the last dump
    return Status::ok();
  }
  *logits = activation(def_.graph.outputs()[0], view.num_tokens, rows);
  return Status::ok();
}

}  // namespace anvil
