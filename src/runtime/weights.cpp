// WeightStore::load: checkpoint tensors -> backend tensors, validated against the weight table.
#include "runtime/weights.h"

#include <set>
#include <vector>

namespace anvil {

Tensor WeightStore::get(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? Tensor() : it->second;
}

Result<std::vector<float>> gather_weight_f32(const ModelDefinition& def, const WeightSource& ws, const Checkpoint& ckpt,
                                             std::set<std::string>* used) {
  const std::string where = " in " + ckpt.dir();
  const int64_t numel = ws.shape.numel();
  if (ws.computed) {
    if (ws.name != "rope.inv_freq") return internal_error("no loader for computed weight " + ws.name);
    std::vector<float> f = rope_inv_freq(def.spec);
    if (static_cast<int64_t>(f.size()) != numel) return internal_error("rope.inv_freq has the wrong size");
    return f;
  }
  std::vector<float> host(static_cast<size_t>(numel));
  int64_t row = 0;
  const int64_t row_elems = ws.shape.rank > 1 ? ws.shape.numel() / ws.shape[0] : 1;
  for (const std::string& hf : ws.hf_names) {
    auto t = ckpt.get(hf);
    if (!t.is_ok()) return not_found("missing tensor '" + hf + "'" + where + " (needed for " + ws.name + ")");
    const Tensor& v = t->view;
    if (v.dtype != DType::kF32 && v.dtype != DType::kBF16 && v.dtype != DType::kF16) {
      return invalid_argument("tensor '" + hf + "' in " + t->file + " has dtype " + std::string(dtype_name(v.dtype)) +
                              "; anvil loads f32, bf16 or f16 weights");
    }
    // Each source must match the target in every dim but the first.
    bool shape_ok = v.rank() == ws.shape.rank && v.rank() >= 1;
    for (int d = 1; shape_ok && d < v.rank(); ++d) shape_ok = v.dim(d) == ws.shape[d];
    if (shape_ok) shape_ok = row + v.dim(0) <= ws.shape[0];
    if (!shape_ok) {
      return invalid_argument("tensor '" + hf + "' in " + t->file + " has shape " + v.shape.to_string() +
                              ", which does not fit " + ws.name + " " + ws.shape.to_string() +
                              " (check the config.json sizes)");
    }
    convert_to_f32(v.dtype, v.data, host.data() + row * row_elems, static_cast<size_t>(v.numel()));
    row += v.dim(0);
    if (used) used->insert(hf);
  }
  if (row != (ws.shape.rank > 0 ? ws.shape[0] : 1)) {
    return invalid_argument("tensors for " + ws.name + where + " have " + std::to_string(row) + " rows in total, expected " +
                            std::to_string(ws.shape[0]));
  }
  return host;
}

Status check_no_unexpected_tensors(const ModelDefinition& def, const Checkpoint& ckpt, const std::set<std::string>& used) {
  for (const std::string& name : ckpt.names()) {
    if (used.count(name)) continue;
    bool ignored = false;
    for (const std::string& suffix : def.ignored_hf_suffixes) {
      if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) ignored = true;
    }
    if (!ignored) {
      return invalid_argument("unexpected tensor '" + name + "' in " + ckpt.dir() + ": the " + def.spec.architecture +
                              " definition has no place for it (wrong architecture in config.json?)");
    }
  }
  return Status::ok();
}

Result<WeightStore> WeightStore::load(const ModelDefinition& def, const Checkpoint& ckpt, Backend* backend) {
  WeightStore store;
  std::set<std::string> used;
  // Tensor parallelism: each weight is cut to this rank's shard right after it is read.
  const dist::ModelDims dims = model_dims(def.spec);
  ANVIL_ASSIGN_OR_RETURN(const dist::RankPlan plan, dist::plan_rank(dims, def.parallel));
  for (const WeightSource& ws : def.weights) {
    const DType target = ws.keep_f32 ? DType::kF32 : backend->compute_dtype();
    ANVIL_ASSIGN_OR_RETURN(std::vector<float> host, gather_weight_f32(def, ws, ckpt, &used));
    Shape shape = ws.shape;
    if (def.parallel.tp_size > 1 && ws.split != dist::TpSplit::kReplicated) {
      Result<Shape> s = dist::shard_shape(ws.split, ws.split_parts, ws.shape, dims, plan, def.parallel);
      if (!s.is_ok()) return s.status().with_context("sharding " + ws.name);
      Result<std::vector<float>> shard = dist::shard_weight(ws.split, ws.split_parts, host, ws.shape, dims, plan, def.parallel);
      if (!shard.is_ok()) return shard.status().with_context("sharding " + ws.name);
      shape = *s;
      host = std::move(shard).value();
    }
    const int64_t numel = shape.numel();
    const size_t bytes = dtype_bytes_for(target, static_cast<size_t>(numel));
    std::vector<uint8_t> converted(bytes);
    convert_from_f32(target, host.data(), converted.data(), static_cast<size_t>(numel));
    ANVIL_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::create(backend, bytes));
    ANVIL_RETURN_IF_ERROR(backend->copy_h2d(buf.get(), converted.data(), bytes));
    // copy_h2d may be asynchronous: the host buffer must outlive it.
    ANVIL_RETURN_IF_ERROR(backend->synchronize());
    store.tensors_[ws.name] = buf.tensor(target, shape);
    store.buffers_[ws.name] = std::move(buf);
    store.total_bytes_ += bytes;
  }
  ANVIL_RETURN_IF_ERROR(check_no_unexpected_tensors(def, ckpt, used));
  return store;
}

Result<WeightStore> WeightStore::from_host(const std::vector<HostWeight>& weights, Backend* backend) {
  WeightStore store;
  for (const HostWeight& w : weights) {
    if (w.bytes != dtype_bytes_for(w.dtype, static_cast<size_t>(w.shape.numel()))) {
      return invalid_argument("weight " + w.name + " " + w.shape.to_string() + " " + std::string(dtype_name(w.dtype)) +
                              " has " + std::to_string(w.bytes) + " bytes, which does not match its shape");
    }
    if (store.buffers_.count(w.name)) return invalid_argument("weight " + w.name + " appears twice");
    Result<DeviceBuffer> buf = DeviceBuffer::create(backend, w.bytes);
    if (!buf.is_ok()) return buf.status().with_context("allocating weight " + w.name);
    store.tensors_[w.name] = buf->tensor(w.dtype, w.shape);
    store.buffers_[w.name] = std::move(buf).value();
    store.total_bytes_ += w.bytes;
  }
  for (const HostWeight& w : weights) {
    ANVIL_RETURN_IF_ERROR(backend->copy_h2d(store.buffers_[w.name].get(), w.data, w.bytes));
  }
  ANVIL_RETURN_IF_ERROR(backend->synchronize());
  return store;
}

}  // namespace anvil
