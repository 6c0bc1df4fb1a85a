// What an architecture file provides: the declarative weight table (anvil weight name <- HF
// tensor names, concatenated along dim 0 when several, e.g. q|k|v -> qkv) and the Graph builder.
// One file per family in src/model/archs/; the Llama family (llama, mistral, qwen2, qwen3) shares
// one builder switched by ModelSpec fields.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"
#include "dist/sharding.h"
#include "graph/graph.h"
#include "model/model_spec.h"

namespace anvil {

struct WeightSource {
  std::string name;                   // anvil name, as used in the Graph
  Shape shape;                        // expected full shape after concatenation
  std::vector<std::string> hf_names;  // concatenated along dim 0, in order
  bool computed = false;              // not in the checkpoint (e.g. rope.inv_freq), made by the loader
  bool keep_f32 = false;              // stays f32 on every backend
  // Tensor parallelism: how the loader cuts this weight for a rank (shape above stays the full
  // checkpoint shape; the graph holds the rank's shard shape).
  dist::TpSplit split = dist::TpSplit::kReplicated;
  int32_t split_parts = 1;            // kColumn: stacked parts split separately (gate | up: 2)
};

struct ModelDefinition {
  ModelSpec spec;
  Graph graph;
  std::vector<WeightSource> weights;
  // HF tensor names that may appear in a checkpoint and are deliberately unused.
  std::vector<std::string> ignored_hf_suffixes;
  // The rank this definition is for: its graph and weights are that rank's part (layers of its
  // pipeline stage; sharded heads, MLP columns and vocab with all_reduce / all_gather ops). spec
  // stays the whole model's.
  dist::ParallelConfig parallel;
};

// Builds the definition for any supported family (dispatches on spec.family).
Result<ModelDefinition> define_model(const ModelSpec& spec);
// The definition of one rank of a tensor x pipeline parallel job; errors name the model size
// that the parallel sizes do not divide.
Result<ModelDefinition> define_model(const ModelSpec& spec, const dist::ParallelConfig& parallel);
// The sizes sharding depends on.
dist::ModelDims model_dims(const ModelSpec& spec);

}  // namespace anvil
