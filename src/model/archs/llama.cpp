// The Llama family builder: llama (2/3/3.x), mistral, qwen2 (QKV bias), qwen3 (q/k norm).
// Residual stream: "hidden.{i}" enters layer i (HF's hidden_states[i]); "layers.{i}.mid" is the
// residual after the attention add; both live in one buffer, updated in place by the fused
// residual-add RMSNorm. "final_norm" is HF's last hidden state (all positions).
#include <cmath>
#include <set>

#include "model/archs/arch.h"

namespace anvil {
namespace {

std::string layer_name(int64_t i, const std::string& rest) { return "layers." + std::to_string(i) + "." + rest; }
std::string hf_layer(int64_t i, const std::string& rest) { return "model.layers." + std::to_string(i) + "." + rest; }

// The weight table of one rank: its stage's layers (plus the embedding on the first stage and
// the final norm and LM head on the last), each weight tagged with how tensor parallelism cuts it.
std::vector<WeightSource> llama_weights(const ModelSpec& s, const dist::RankPlan& rp) {
  using dist::TpSplit;
  const int64_t h = s.hidden_size, d = s.head_dim, f = s.intermediate_size;
  const int64_t qkv_rows = s.q_size() + 2 * s.kv_size();
  std::vector<WeightSource> w;
  auto add = [&](WeightSource ws, TpSplit split, int32_t parts = 1) {
    ws.split = split;
    ws.split_parts = parts;
    w.push_back(std::move(ws));
  };
  if (rp.first_stage) add({"embed.weight", {s.vocab_size, h}, {"model.embed_tokens.weight"}}, TpSplit::kReplicated);
  for (int64_t i = rp.layer_begin; i < rp.layer_end; ++i) {
    const std::string a = "self_attn.";
    add({layer_name(i, "attn_norm.weight"), {h}, {hf_layer(i, "input_layernorm.weight")}}, TpSplit::kReplicated);
    add({layer_name(i, "attn.qkv.weight"),
         {qkv_rows, h},
         {hf_layer(i, a + "q_proj.weight"), hf_layer(i, a + "k_proj.weight"), hf_layer(i, a + "v_proj.weight")}},
        TpSplit::kQkvHeads);
    if (s.qkv_bias) {
      add({layer_name(i, "attn.qkv.bias"),
           {qkv_rows},
           {hf_layer(i, a + "q_proj.bias"), hf_layer(i, a + "k_proj.bias"), hf_layer(i, a + "v_proj.bias")}},
          TpSplit::kQkvHeads);
    }
    if (s.qk_norm) {
      add({layer_name(i, "attn.q_norm.weight"), {d}, {hf_layer(i, a + "q_norm.weight")}}, TpSplit::kReplicated);
      add({layer_name(i, "attn.k_norm.weight"), {d}, {hf_layer(i, a + "k_norm.weight")}}, TpSplit::kReplicated);
    }
    add({layer_name(i, "attn.o.weight"), {h, s.q_size()}, {hf_layer(i, a + "o_proj.weight")}}, TpSplit::kRow);
    if (s.o_bias) add({layer_name(i, "attn.o.bias"), {h}, {hf_layer(i, a + "o_proj.bias")}}, TpSplit::kRowBias);
    add({layer_name(i, "mlp_norm.weight"), {h}, {hf_layer(i, "post_attention_layernorm.weight")}}, TpSplit::kReplicated);
    add({layer_name(i, "mlp.gate_up.weight"), {2 * f, h}, {hf_layer(i, "mlp.gate_proj.weight"), hf_layer(i, "mlp.up_proj.weight")}},
        TpSplit::kColumn, 2);
    if (s.mlp_bias) {
      add({layer_name(i, "mlp.gate_up.bias"), {2 * f}, {hf_layer(i, "mlp.gate_proj.bias"), hf_layer(i, "mlp.up_proj.bias")}},
          TpSplit::kColumn, 2);
    }
    add({layer_name(i, "mlp.down.weight"), {h, f}, {hf_layer(i, "mlp.down_proj.weight")}}, TpSplit::kRow);
    if (s.mlp_bias) add({layer_name(i, "mlp.down.bias"), {h}, {hf_layer(i, "mlp.down_proj.bias")}}, TpSplit::kRowBias);
  }
  if (rp.last_stage) {
    add({"final_norm.weight", {h}, {"model.norm.weight"}}, TpSplit::kReplicated);
    add({"lm_head.weight", {s.vocab_size, h}, {s.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"}},
        TpSplit::kVocab);
  }
  WeightSource inv_freq{"rope.inv_freq", {d / 2}, {}};
  inv_freq.computed = true;
  inv_freq.keep_f32 = true;
  w.push_back(inv_freq);
  return w;
}

// One rank's graph. With tensor parallelism the linears are the rank's shards (heads, MLP
// columns, vocab rows), attn.o and mlp.down are followed by an all_reduce, and the LM head's
// logits shard by an all_gather into the full vocabulary. A pipeline stage after the first
// receives the residual stream ("layers.{b-1}.mlp.down" and "layers.{b-1}.mid", the two addends
// the next fused add-norm takes) from the previous stage; one before the last sends it on.
Graph llama_graph(const ModelSpec& s, const dist::ParallelConfig& pc, const dist::RankPlan& rp) {
  Graph g;
  const int64_t h = s.hidden_size, d = s.head_dim, f = rp.intermediate;
  const int64_t q_size = rp.num_heads * d, kv_size = rp.num_kv_heads * d;
  const int64_t qkv_cols = q_size + 2 * kv_size;
  const bool tp = pc.tp_size > 1;
  const float eps = static_cast<float>(s.rms_norm_eps);

  auto w = [&](const std::string& name, Shape shape) { return g.weight(name, shape); };
  auto linear = [&](const std::string& name, int x, int weight, int bias, int64_t n, RowScale rows) {
    int out = g.activation(name, {n}, rows);
    g.add_node({OpKind::kLinear, name, {x, weight, bias}, {out}, {}});
    return out;
  };
  // Sum of a row-parallel linear's partial outputs over the tensor-parallel ranks, in place.
  auto all_reduce = [&](int x) {
    if (!tp) return x;
    GraphTensor t;
    t.name = g.tensor(x).name + ".sum";
    t.shape = g.tensor(x).shape;
    t.alias_of = x;
    const int out = g.add_tensor(t);
    g.add_node({OpKind::kAllReduce, t.name, {x}, {out}, {}});
    return out;
  };
  // Fused residual add + norm. Returns {normed, residual_out}.
  auto norm = [&](const std::string& name, const std::string& residual_name, int x, int residual, int weight) {
    int out = g.activation(name, {h});
    OpAttrs attrs;
    attrs.eps = eps;
    if (residual < 0) {
      g.add_node({OpKind::kRmsNorm, name, {x, -1, weight}, {out}, attrs});
      return std::pair<int, int>{out, -1};
    }
    GraphTensor r;
    r.name = residual_name;
    r.shape = {h};
    r.alias_of = residual;
    int res_out = g.add_tensor(r);
    g.add_node({OpKind::kRmsNorm, name, {x, residual, weight}, {out, res_out}, attrs});
    return std::pair<int, int>{out, res_out};
  };

  const int ids = g.input("token_ids", {}, RowScale::kTokens, true);
  const int logit_rows = g.input("logit_rows", {}, RowScale::kLogitRows, true);
  const int inv_freq = w("rope.inv_freq", {d / 2});
  int delta = -1;  // the last layer's MLP output, still to be added to the residual
  int residual = -1;
  if (rp.first_stage) {
    residual = g.activation("hidden.0", {h});
    g.add_node({OpKind::kEmbedding, "embed", {ids, w("embed.weight", {s.vocab_size, h})}, {residual}, {}});
  } else {
    const int64_t prev = rp.layer_begin - 1;
    delta = g.activation(layer_name(prev, "mlp.down"), {h});
    g.add_node({OpKind::kRecv, "pp.recv.delta", {}, {delta}, {}});
    residual = g.activation(layer_name(prev, "mid"), {h});
    g.add_node({OpKind::kRecv, "pp.recv.residual", {}, {residual}, {}});
  }

  for (int64_t i = rp.layer_begin; i < rp.layer_end; ++i) {
    const int attn_norm_w = w(layer_name(i, "attn_norm.weight"), {h});
    auto [x, r] = i == 0 ? norm(layer_name(i, "attn_norm"), "", residual, -1, attn_norm_w)
                         : norm(layer_name(i, "attn_norm"), "hidden." + std::to_string(i), delta, residual, attn_norm_w);
    if (r >= 0) residual = r;

    const int qkv_w = w(layer_name(i, "attn.qkv.weight"), {qkv_cols, h});
    const int qkv_b = s.qkv_bias ? w(layer_name(i, "attn.qkv.bias"), {qkv_cols}) : -1;
    const int qkv = linear(layer_name(i, "attn.qkv"), x, qkv_w, qkv_b, qkv_cols, RowScale::kTokens);
    const int q_norm = s.qk_norm ? w(layer_name(i, "attn.q_norm.weight"), {d}) : -1;
    const int k_norm = s.qk_norm ? w(layer_name(i, "attn.k_norm.weight"), {d}) : -1;
    const int q = g.activation(layer_name(i, "attn.q"), {q_size});
    OpAttrs rope;
    rope.layer = static_cast<int32_t>(i);
    rope.eps = eps;
    g.add_node({OpKind::kRopeKvWrite, layer_name(i, "attn.rope"), {qkv, q_norm, k_norm, inv_freq}, {q}, rope});
    const int attn = g.activation(layer_name(i, "attn.core"), {q_size});
    OpAttrs at;
    at.layer = static_cast<int32_t>(i);
    at.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    g.add_node({OpKind::kAttention, layer_name(i, "attn.core"), {q}, {attn}, at});
    const int o_w = w(layer_name(i, "attn.o.weight"), {h, q_size});
    const int o_b = s.o_bias ? w(layer_name(i, "attn.o.bias"), {h}) : -1;
    const int attn_out = all_reduce(linear(layer_name(i, "attn.o"), attn, o_w, o_b, h, RowScale::kTokens));

    auto [y, mid] = norm(layer_name(i, "mlp_norm"), layer_name(i, "mid"), attn_out, residual,
                         w(layer_name(i, "mlp_norm.weight"), {h}));
    residual = mid;
    const int gu_w = w(layer_name(i, "mlp.gate_up.weight"), {2 * f, h});
    const int gu_b = s.mlp_bias ? w(layer_name(i, "mlp.gate_up.bias"), {2 * f}) : -1;
    const int gate_up = linear(layer_name(i, "mlp.gate_up"), y, gu_w, gu_b, 2 * f, RowScale::kTokens);
    const int act = g.activation(layer_name(i, "mlp.act"), {f});
    g.add_node({OpKind::kActMul, layer_name(i, "mlp.act"), {gate_up}, {act}, {}});
    const int down_w = w(layer_name(i, "mlp.down.weight"), {h, f});
    const int down_b = s.mlp_bias ? w(layer_name(i, "mlp.down.bias"), {h}) : -1;
    delta = all_reduce(linear(layer_name(i, "mlp.down"), act, down_w, down_b, h, RowScale::kTokens));
  }
  if (!rp.last_stage) {
    g.add_node({OpKind::kSend, "pp.send.delta", {delta}, {}, {}});
    g.add_node({OpKind::kSend, "pp.send.residual", {residual}, {}, {}});
    return g;
  }
  auto [final_norm, last_residual] =
      norm("final_norm", "hidden." + std::to_string(s.num_layers), delta, residual, w("final_norm.weight", {h}));
  (void)last_residual;
  const int last = g.activation("last_hidden", {h}, RowScale::kLogitRows);
  g.add_node({OpKind::kGatherRows, "last_hidden", {final_norm, logit_rows}, {last}, {}});
  GraphTensor logits;
  logits.name = "logits";
  logits.shape = {s.vocab_size};
  logits.rows = RowScale::kLogitRows;
  logits.force_f32 = true;
  if (!tp) {
    const int logits_id = g.add_tensor(logits);
    g.add_node({OpKind::kLinear, "lm_head", {last, w("lm_head.weight", {s.vocab_size, h}), -1}, {logits_id}, {}});
    g.mark_output(logits_id);
    return g;
  }
  GraphTensor shard = logits;
  shard.name = "logits.shard";
  shard.shape = {rp.vocab_shard};
  const int shard_id = g.add_tensor(shard);
  g.add_node({OpKind::kLinear, "lm_head", {last, w("lm_head.weight", {rp.vocab_shard, h}), -1}, {shard_id}, {}});
  const int logits_id = g.add_tensor(logits);
  g.add_node({OpKind::kAllGather, "logits", {shard_id}, {logits_id}, {}});
  g.mark_output(logits_id);
  return g;
}

}  // namespace

dist::ModelDims model_dims(const ModelSpec& s) {
  dist::ModelDims d;
  d.vocab = s.vocab_size;
  d.hidden = s.hidden_size;
  d.intermediate = s.intermediate_size;
  d.num_layers = s.num_layers;
  d.num_heads = s.num_heads;
  d.num_kv_heads = s.num_kv_heads;
  d.head_dim = s.head_dim;
  return d;
}

Result<ModelDefinition> define_model(const ModelSpec& spec) { return define_model(spec, dist::ParallelConfig{}); }

Result<ModelDefinition> define_model(const ModelSpec& spec, const dist::ParallelConfig& parallel) {
  ANVIL_ASSIGN_OR_RETURN(dist::RankPlan rank, dist::plan_rank(model_dims(spec), parallel));
  switch (spec.family) {
    case ArchFamily::kLlama:
    case ArchFamily::kMistral:
    case ArchFamily::kQwen2:
    case ArchFamily::kQwen3: {
      ModelDefinition def;
      def.spec = spec;
      def.parallel = parallel;
      def.graph = llama_graph(spec, parallel, rank);
      def.weights = llama_weights(spec, rank);
      def.ignored_hf_suffixes = {"rotary_emb.inv_freq"};
      if (spec.tie_word_embeddings) def.ignored_hf_suffixes.push_back("lm_head.weight");
      if (parallel.pp_size > 1) {
        // Other stages' tensors are in the checkpoint too: expected, and not this rank's to load.
        ANVIL_ASSIGN_OR_RETURN(dist::RankPlan whole, dist::plan_rank(model_dims(spec), dist::ParallelConfig{}));
        std::set<std::string> mine;
        for (const WeightSource& ws : def.weights) mine.insert(ws.hf_names.begin(), ws.hf_names.end());
        for (const WeightSource& ws : llama_weights(spec, whole)) {
          for (const std::string& hf : ws.hf_names)
            if (!mine.count(hf)) def.ignored_hf_suffixes.push_back(hf);
        }
      }
      return def;
    }
  }
  return unsupported("model family not handled by define_model");
}

}  // namespace anvil
