// The Llama family builder: llama (2/3/3.x), mistral, qwen2 (QKV bias), qwen3 (q/k norm).
// Residual stream: "hidden.{i}" enters layer i (HF's hidden_states[i]); "layers.{i}.mid" is the
// residual after the attention add; both live in one buffer, updated in place by the fused
// residual-add RMSNorm. "final_norm" is HF's last hidden state (all positions).
#include <cmath>

#include "model/archs/arch.h"

namespace anvil {
namespace {

std::string layer_name(int64_t i, const std::string& rest) { return "layers." + std::to_string(i) + "." + rest; }
std::string hf_layer(int64_t i, const std::string& rest) { return "model.layers." + std::to_string(i) + "." + rest; }

std::vector<WeightSource> llama_weights(const ModelSpec& s) {
  const int64_t h = s.hidden_size, d = s.head_dim, f = s.intermediate_size;
  const int64_t qkv_rows = s.q_size() + 2 * s.kv_size();
  std::vector<WeightSource> w;
  w.push_back({"embed.weight", {s.vocab_size, h}, {"model.embed_tokens.weight"}});
  for (int64_t i = 0; i < s.num_layers; ++i) {
    const std::string a = "self_attn.";
    w.push_back({layer_name(i, "attn_norm.weight"), {h}, {hf_layer(i, "input_layernorm.weight")}});
    w.push_back({layer_name(i, "attn.qkv.weight"),
                 {qkv_rows, h},
                 {hf_layer(i, a + "q_proj.weight"), hf_layer(i, a + "k_proj.weight"), hf_layer(i, a + "v_proj.weight")}});
    if (s.qkv_bias) {
      w.push_back({layer_name(i, "attn.qkv.bias"),
                   {qkv_rows},
                   {hf_layer(i, a + "q_proj.bias"), hf_layer(i, a + "k_proj.bias"), hf_layer(i, a + "v_proj.bias")}});
    }
    if (s.qk_norm) {
      w.push_back({layer_name(i, "attn.q_norm.weight"), {d}, {hf_layer(i, a + "q_norm.weight")}});
      w.push_back({layer_name(i, "attn.k_norm.weight"), {d}, {hf_layer(i, a + "k_norm.weight")}});
    }
    w.push_back({layer_name(i, "attn.o.weight"), {h, s.q_size()}, {hf_layer(i, a + "o_proj.weight")}});
    if (s.o_bias) w.push_back({layer_name(i, "attn.o.bias"), {h}, {hf_layer(i, a + "o_proj.bias")}});
    w.push_back({layer_name(i, "mlp_norm.weight"), {h}, {hf_layer(i, "post_attention_layernorm.weight")}});
    w.push_back({layer_name(i, "mlp.gate_up.weight"),
                 {2 * f, h},
                 {hf_layer(i, "mlp.gate_proj.weight"), hf_layer(i, "mlp.up_proj.weight")}});
    if (s.mlp_bias) {
      w.push_back({layer_name(i, "mlp.gate_up.bias"),
                   {2 * f},
                   {hf_layer(i, "mlp.gate_proj.bias"), hf_layer(i, "mlp.up_proj.bias")}});
    }
    w.push_back({layer_name(i, "mlp.down.weight"), {h, f}, {hf_layer(i, "mlp.down_proj.weight")}});
    if (s.mlp_bias) w.push_back({layer_name(i, "mlp.down.bias"), {h}, {hf_layer(i, "mlp.down_proj.bias")}});
  }
  w.push_back({"final_norm.weight", {h}, {"model.norm.weight"}});
  w.push_back({"lm_head.weight",
               {s.vocab_size, h},
               {s.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"}});
  WeightSource inv_freq{"rope.inv_freq", {d / 2}, {}};
  inv_freq.computed = true;
  inv_freq.keep_f32 = true;
  w.push_back(inv_freq);
  return w;
}

Graph llama_graph(const ModelSpec& s) {
  Graph g;
  const int64_t h = s.hidden_size, d = s.head_dim, f = s.intermediate_size;
  const int64_t qkv_cols = s.q_size() + 2 * s.kv_size();
  const float eps = static_cast<float>(s.rms_norm_eps);

  auto w = [&](const std::string& name, Shape shape) { return g.weight(name, shape); };
  auto linear = [&](const std::string& name, int x, int weight, int bias, int64_t n, RowScale rows) {
    int out = g.activation(name, {n}, rows);
    g.add_node({OpKind::kLinear, name, {x, weight, bias}, {out}, {}});
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
  int hidden = g.activation("hidden.0", {h});
  g.add_node({OpKind::kEmbedding, "embed", {ids, w("embed.weight", {s.vocab_size, h})}, {hidden}, {}});

  int delta = -1;  // the last layer's MLP output, still to be added to the residual
  int residual = hidden;
  for (int64_t i = 0; i < s.num_layers; ++i) {
    const int attn_norm_w = w(layer_name(i, "attn_norm.weight"), {h});
    auto [x, r] = i == 0 ? norm(layer_name(i, "attn_norm"), "", residual, -1, attn_norm_w)
                         : norm(layer_name(i, "attn_norm"), "hidden." + std::to_string(i), delta, residual, attn_norm_w);
    if (r >= 0) residual = r;

    const int qkv_w = w(layer_name(i, "attn.qkv.weight"), {qkv_cols, h});
    const int qkv_b = s.qkv_bias ? w(layer_name(i, "attn.qkv.bias"), {qkv_cols}) : -1;
    const int qkv = linear(layer_name(i, "attn.qkv"), x, qkv_w, qkv_b, qkv_cols, RowScale::kTokens);
    const int q_norm = s.qk_norm ? w(layer_name(i, "attn.q_norm.weight"), {d}) : -1;
    const int k_norm = s.qk_norm ? w(layer_name(i, "attn.k_norm.weight"), {d}) : -1;
    const int q = g.activation(layer_name(i, "attn.q"), {s.q_size()});
    OpAttrs rope;
    rope.layer = static_cast<int32_t>(i);
    rope.eps = eps;
    g.add_node({OpKind::kRopeKvWrite, layer_name(i, "attn.rope"), {qkv, q_norm, k_norm, inv_freq}, {q}, rope});
    const int attn = g.activation(layer_name(i, "attn.core"), {s.q_size()});
    OpAttrs at;
    at.layer = static_cast<int32_t>(i);
    at.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    g.add_node({OpKind::kAttention, layer_name(i, "attn.core"), {q}, {attn}, at});
    const int o_w = w(layer_name(i, "attn.o.weight"), {h, s.q_size()});
    const int o_b = s.o_bias ? w(layer_name(i, "attn.o.bias"), {h}) : -1;
    const int attn_out = linear(layer_name(i, "attn.o"), attn, o_w, o_b, h, RowScale::kTokens);

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
    delta = linear(layer_name(i, "mlp.down"), act, down_w, down_b, h, RowScale::kTokens);
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
  const int logits_id = g.add_tensor(logits);
  g.add_node({OpKind::kLinear, "lm_head", {last, w("lm_head.weight", {s.vocab_size, h}), -1}, {logits_id}, {}});
  g.mark_output(logits_id);
  return g;
}

}  // namespace

Result<ModelDefinition> define_model(const ModelSpec& spec) {
  switch (spec.family) {
    case ArchFamily::kLlama:
    case ArchFamily::kMistral:
    case ArchFamily::kQwen2:
    case ArchFamily::kQwen3: {
      ModelDefinition def;
      def.spec = spec;
      def.graph = llama_graph(spec);
      def.weights = llama_weights(spec);
      def.ignored_hf_suffixes = {"rotary_emb.inv_freq"};
      if (spec.tie_word_embeddings) def.ignored_hf_suffixes.push_back("lm_head.weight");
      return def;
    }
  }
  return unsupported("model family not handled by define_model");
}

}  // namespace anvil
