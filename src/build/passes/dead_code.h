// Dead-tensor elimination: drops ops none of whose outputs reach a graph output (ops with side
// effects, the KV cache writers, always stay) and then every tensor no kept op touches. Tensor
// ids are renumbered in their original order; graph inputs always stay (the runner binds them by
// name). Weights that no kept op reads are reported so the builder leaves them out of the engine.
#pragma once

#include <string>
#include <vector>

#include "graph/graph.h"

namespace anvil {

struct DeadCodeReport {
  int32_t ops_removed = 0;
  int32_t tensors_removed = 0;
  std::vector<std::string> weights_removed;  // graph weights no longer read
};

Graph eliminate_dead_code(const Graph& g, DeadCodeReport* report);

}  // namespace anvil
