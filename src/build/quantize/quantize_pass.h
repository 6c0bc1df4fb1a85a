// The quantize pass of build_engine (docs/quantization.md): every layer projection's kLinear
// (attn.qkv, attn.o, mlp.gate_up, mlp.down; never lm_head or the embeddings) becomes a kQLinear
// reading "<name>.qweight", "<name>.scales" and, for int4, "<name>.offsets", in backend.h's
// QuantFormat layouts. Activation-aware factors are planned once up front (SmoothQuant, AWQ) and
// folded into the weights that precede each projection (the RMSNorm weight, the up rows of
// gate_up); every weight's bytes are then produced independently, one table entry at a time.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "build/engine_file.h"
#include "build/quantize/calibration.h"
#include "build/quantize/quant_types.h"
#include "model/archs/arch.h"
#include "model/checkpoint/checkpoint.h"

namespace anvil {

inline constexpr float kSmoothQuantAlpha = 0.5f;
// AWQ keeps this many calibration rows per projection for its scale and clip searches (their
// cost grows with it: ~7 s of CPU per SmolLM2-135M layer at 256).
inline constexpr int64_t kAwqSampleRows = 256;

// The kQLinear format a method produces (kNone has none: an error).
Result<QuantFormat> quant_format_of(QuantMethod m);

// What calibration must collect for these options (nothing for RTN methods without a quantized
// KV cache). GPTQ's Hessians are not among them: quantize_sequentially gathers them layer by layer.
CalibrationNeeds calibration_needs(const EngineBuildOptions& o);

// True when the method quantizes layer by layer during calibration (sequential.h): GPTQ.
bool quantizes_sequentially(QuantMethod m);

// What the layer-by-layer run made: every projection's packed weight and, for int4-gptq, the
// AWQ column scales s it quantized W diag(s) with (plan folds 1/s into the producers as int4-awq
// does: the RMSNorm weights, the up rows of gate_up).
struct SequentialQuantization {
  std::map<std::string, QuantizedLinear> weights;
  std::map<std::string, std::vector<float>> column_scales;  // by weight; none for o_proj
};

// The layer-by-layer run of such a method (quantize_sequentially with the method's quantizer and
// options), for QuantizePass::plan. `device` null: on the CPU. int4-gptq first searches AWQ
// scales per layer (awq_search_hessian over that layer's Hessians), then runs GPTQ on W diag(s)
// with the Hessian diag(1/s) H diag(1/s) of the scaled input.
Result<SequentialQuantization> quantize_gptq_sequentially(const ModelDefinition& def, const Checkpoint& ckpt,
                                                          Backend* device, const CalibrationData& calib,
                                                          const EngineBuildOptions& o);

// The kQLinear that replaces projection node `n` (a kLinear reading weight "<base>.weight",
// [n_out, k]) in `out`: its weights "<base>.qweight", ".scales" and, for kInt4Group, ".offsets"
// are added to `out` with the shapes backend.h's QuantFormat fixes. Shared by the quantize pass
// and the pre-quantized import.
Node qlinear_node(Graph& out, const Node& n, const std::string& base, int64_t n_out, int64_t k, QuantFormat format,
                  int32_t group_size);

// The engine weights of that kQLinear ("<base>.qweight", ".scales", [".offsets"]): name, dtype,
// shape and bytes set, nothing else.
std::vector<EngineWeight> qlinear_engine_weights(const std::string& base, int64_t n_out, int64_t k, QuantFormat format,
                                                 int32_t group_size);

// def's weight table entry `name`, or null.
const WeightSource* find_weight_source(const ModelDefinition& def, const std::string& name);

class QuantizePass {
 public:
  // Checks the options against the model (int4 group size divides every projection's K) and
  // computes the smoothing / AWQ factors, reading the projections they need from `ckpt`. `stats`
  // must hold what calibration_needs(o) asked for; it must outlive the pass (GPTQ reads its
  // Hessians in produce()). With quant none and no KV quantization the pass changes nothing.
  // `sequential`: what quantize_gptq_sequentially already made (GPTQ needs every projection;
  // other methods take none).
  static Result<QuantizePass> plan(const ModelDefinition& def, const Checkpoint& ckpt, const EngineBuildOptions& o,
                                   const CalibrationStats* stats, SequentialQuantization sequential = {});

  // The graph with every quantized projection rewritten to kQLinear (dropped weight tensors
  // removed). Unchanged when quant is none.
  Graph rewrite(const Graph& g) const;

  // True when `ws` is quantized: produce() is then expensive and runs on ThreadPool::global()
  // itself, so the caller must not call it from inside a pool job.
  bool quantizes(const WeightSource& ws) const { return projections_.count(ws.name) > 0; }

  // The engine weights table entry `ws` becomes, in order (offsets and checksums unset).
  // `dtype` is the entry's unquantized dtype (the build dtype, or f32 for keep_f32 entries).
  std::vector<EngineWeight> engine_weights(const WeightSource& ws, DType dtype) const;

  // Their bytes, from the entry's f32 values (gather_weight_f32).
  Result<std::vector<std::vector<uint8_t>>> produce(const WeightSource& ws, std::vector<float> values, DType dtype) const;

  // Weights made from calibration alone: "layers.{i}.attn.k_scale" / "v_scale", f32
  // [num_kv_heads], scale = amax / 448 (fp8) or amax / 127 (int8). Empty without KV quantization.
  const std::vector<std::pair<EngineWeight, std::vector<uint8_t>>>& kv_scale_weights() const { return kv_scales_; }

 private:
  struct Projection {
    int64_t n = 0, k = 0;
    std::vector<float> column_scale;  // W[:, c] *= s[c] before quantizing (SmoothQuant, AWQ); empty: none
    int64_t unclipped_rows = 0;       // AWQ: leading rows never clipped (q and k of qkv)
  };
  QuantMethod method_ = QuantMethod::kNone;
  QuantFormat format_ = QuantFormat::kInt8WeightOnly;
  int32_t group_size_ = 0;
  const CalibrationStats* stats_ = nullptr;
  std::map<std::string, Projection> projections_;           // by weight name
  std::map<std::string, QuantizedLinear> sequential_;       // GPTQ: made layer by layer before the pass
  std::map<std::string, std::vector<float>> divide_;        // norm weight name -> w[c] /= s[c]
  std::map<std::string, std::vector<float>> divide_up_;     // gate_up weight/bias -> up half rows /= s
  std::vector<std::pair<EngineWeight, std::vector<uint8_t>>> kv_scales_;
};

}  // namespace anvil
