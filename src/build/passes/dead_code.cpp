// Dead-tensor elimination: a backward liveness sweep over the op list, then a renumbering copy.
#include "build/passes/dead_code.h"

namespace anvil {

namespace {

// Ops that change state outside their outputs (the KV cache) must run even if nothing reads them.
bool has_side_effects(OpKind k) {
  switch (k) {
    case OpKind::kRopeKvWrite: return true;
    case OpKind::kAllReduce: return true;  // every rank must join the collective
    case OpKind::kAllGather: return true;
    case OpKind::kSend: return true;
    case OpKind::kRecv: return true;
    case OpKind::kEmbedding:
    case OpKind::kRmsNorm:
    case OpKind::kLinear:
    case OpKind::kAttention:
    case OpKind::kActMul:
    case OpKind::kGatherRows:
    case OpKind::kQLinear: return false;
  }
  return true;
}

}  // namespace

Graph eliminate_dead_code(const Graph& g, DeadCodeReport* report) {
  const auto& ts = g.tensors();
  const auto& nodes = g.nodes();
  std::vector<bool> needed(ts.size(), false);
  for (int o : g.outputs()) needed[o] = true;
  std::vector<bool> keep_node(nodes.size(), false);
  for (int i = static_cast<int>(nodes.size()) - 1; i >= 0; --i) {
    const Node& n = nodes[i];
    bool live = has_side_effects(n.op);
    for (int o : n.outputs) live = live || needed[o];
    if (!live) continue;
    keep_node[i] = true;
    for (int in : n.inputs)
      if (in >= 0) needed[in] = true;
    // An output that aliases a buffer updates it in place: the buffer's producer must stay.
    for (int o : n.outputs)
      if (ts[o].alias_of >= 0) needed[ts[o].alias_of] = true;
  }
  // Tensors kept: inputs, and everything a kept op touches (closed over alias targets).
  std::vector<bool> keep(ts.size(), false);
  for (size_t id = 0; id < ts.size(); ++id) keep[id] = ts[id].kind == TensorKind::kInput || needed[id];
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (!keep_node[i]) continue;
    for (int in : nodes[i].inputs)
      if (in >= 0) keep[in] = true;
    for (int o : nodes[i].outputs) keep[o] = true;
  }
  for (size_t id = ts.size(); id-- > 0;) {
    for (int a = ts[id].alias_of; keep[id] && a >= 0; a = ts[a].alias_of) keep[a] = true;
  }

  std::vector<int> new_id(ts.size(), -1);
  Graph out;
  DeadCodeReport r;
  for (size_t id = 0; id < ts.size(); ++id) {
    if (!keep[id]) {
      ++r.tensors_removed;
      if (ts[id].kind == TensorKind::kWeight) r.weights_removed.push_back(ts[id].name);
      continue;
    }
    GraphTensor t = ts[id];
    if (t.alias_of >= 0) t.alias_of = new_id[t.alias_of];  // alias targets precede their aliases
    new_id[id] = out.add_tensor(t);
  }
  auto remap = [&](std::vector<int> ids) {
    for (int& id : ids)
      if (id >= 0) id = new_id[id];
    return ids;
  };
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (!keep_node[i]) {
      ++r.ops_removed;
      continue;
    }
    Node n = nodes[i];
    n.inputs = remap(n.inputs);
    n.outputs = remap(n.outputs);
    out.add_node(std::move(n));
  }
  for (int o : g.outputs()) out.mark_output(new_id[o]);
  if (report) *report = std::move(r);
  return out;
}

}  // namespace anvil
