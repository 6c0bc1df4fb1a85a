// Graph construction, lookup, printing, and the liveness-based activation memory planner.
#include "graph/graph.h"

#include <algorithm>
#include <map>
#include <sstream>

namespace anvil {

const char* op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::kEmbedding: return "embedding";
    case OpKind::kRmsNorm: return "rms_norm";
    case OpKind::kLinear: return "linear";
    case OpKind::kRopeKvWrite: return "rope_kv_write";
    case OpKind::kAttention: return "attention";
    case OpKind::kActMul: return "act_mul";
    case OpKind::kGatherRows: return "gather_rows";
    case OpKind::kQLinear: return "qlinear";
    case OpKind::kAllReduce: return "all_reduce";
    case OpKind::kAllGather: return "all_gather";
    case OpKind::kSend: return "send";
    case OpKind::kRecv: return "recv";
  }
  return "?";
}

int Graph::add_tensor(GraphTensor t) {
  int id = static_cast<int>(tensors_.size());
  by_name_[t.name] = id;
  tensors_.push_back(std::move(t));
  return id;
}

int Graph::input(const std::string& name, Shape row_shape, RowScale rows, bool is_int32) {
  GraphTensor t;
  t.name = name;
  t.kind = TensorKind::kInput;
  t.shape = row_shape;
  t.rows = rows;
  t.is_int32 = is_int32;
  return add_tensor(t);
}

int Graph::weight(const std::string& name, Shape shape) {
  GraphTensor t;
  t.name = name;
  t.kind = TensorKind::kWeight;
  t.shape = shape;
  return add_tensor(t);
}

int Graph::activation(const std::string& name, Shape row_shape, RowScale rows) {
  GraphTensor t;
  t.name = name;
  t.kind = TensorKind::kActivation;
  t.shape = row_shape;
  t.rows = rows;
  return add_tensor(t);
}

int Graph::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? -1 : it->second;
}

std::string Graph::to_string() const {
  std::ostringstream os;
  for (const Node& n : nodes_) {
    os << op_kind_name(n.op) << " " << n.name << "(";
    for (size_t i = 0; i < n.inputs.size(); ++i) os << (i ? ", " : "") << (n.inputs[i] < 0 ? "-" : tensors_[n.inputs[i]].name);
    os << ") -> ";
    for (size_t i = 0; i < n.outputs.size(); ++i) os << (i ? ", " : "") << tensors_[n.outputs[i]].name;
    os << "\n";
  }
  return os.str();
}

MemoryPlan plan_memory(const Graph& g, int64_t max_tokens, int64_t max_logit_rows, size_t elem_bytes) {
  const auto& ts = g.tensors();
  const int n = static_cast<int>(ts.size());
  auto root = [&](int id) {
    while (ts[id].alias_of >= 0) id = ts[id].alias_of;
    return id;
  };
  auto bytes_of = [&](int id) -> int64_t {
    const GraphTensor& t = ts[id];
    const int64_t rows = t.rows == RowScale::kTokens ? max_tokens : max_logit_rows;
    const int64_t eb = t.force_f32 ? 4 : static_cast<int64_t>(elem_bytes);
    return (rows * t.shape.numel() * eb + 255) / 256 * 256;
  };
  // Lifetimes over node indices, per root tensor: [first def, last use]. Graph outputs live to the end.
  std::vector<int> first(n, -1), last(n, -1);
  const auto& nodes = g.nodes();
  for (int i = 0; i < static_cast<int>(nodes.size()); ++i) {
    for (int o : nodes[i].outputs) {
      int r = root(o);
      if (first[r] < 0) first[r] = i;
      last[r] = std::max(last[r], i);
    }
    for (int in : nodes[i].inputs) {
      if (in < 0) continue;
      int r = root(in);
      last[r] = std::max(last[r], i);
    }
  }
  for (int o : g.outputs()) last[root(o)] = static_cast<int>(nodes.size());

  MemoryPlan plan;
  plan.offsets.assign(n, -1);
  // Greedy first-fit over a list of live intervals, in definition order.
  struct Live { int64_t offset, size; int end; };
  std::vector<Live> live;
  std::vector<int> order;
  for (int id = 0; id < n; ++id)
    if (ts[id].kind == TensorKind::kActivation && ts[id].alias_of < 0 && first[id] >= 0) order.push_back(id);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return first[a] < first[b]; });
  for (int id : order) {
    const int64_t size = bytes_of(id);
    plan.unplanned_bytes += size;
    // Drop intervals that ended before this tensor is defined (an input read by the defining node
    // must stay live, hence strict <).
    live.erase(std::remove_if(live.begin(), live.end(), [&](const Live& l) { return l.end < first[id]; }), live.end());
    std::sort(live.begin(), live.end(), [](const Live& a, const Live& b) { return a.offset < b.offset; });
    int64_t offset = 0;
    for (const Live& l : live) {
      if (offset + size <= l.offset) break;
      offset = std::max(offset, l.offset + l.size);
    }
    plan.offsets[id] = offset;
    plan.arena_bytes = std::max(plan.arena_bytes, offset + size);
    live.push_back({offset, size, last[id]});
  }
  for (int id = 0; id < n; ++id)
    if (ts[id].kind == TensorKind::kActivation && ts[id].alias_of >= 0) plan.offsets[id] = plan.offsets[root(id)];
  return plan;
}

}  // namespace anvil
