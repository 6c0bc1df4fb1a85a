// Loading a model's weights onto a backend: every WeightSource of the ModelDefinition is read
// from the checkpoint (concatenating sources along dim 0), checked for shape and dtype, converted
// to the backend's compute dtype and uploaded. Missing, mis-shaped, non-float and unexpected
// extra tensors are errors naming the tensor and the file. from_host() uploads weights that are
// already in their final dtype and layout (an engine file's mmap'd blobs): one copy per weight.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/archs/arch.h"
#include "model/checkpoint/checkpoint.h"

namespace anvil {

// One weight of the table as f32 host values: its checkpoint tensors concatenated along dim 0
// (validated for dtype and shape), or computed (rope.inv_freq). Adds the HF names read to *used.
Result<std::vector<float>> gather_weight_f32(const ModelDefinition& def, const WeightSource& ws, const Checkpoint& ckpt,
                                             std::set<std::string>* used);
// Every checkpoint tensor must be in `used` or match one of def.ignored_hf_suffixes.
Status check_no_unexpected_tensors(const ModelDefinition& def, const Checkpoint& ckpt, const std::set<std::string>& used);

// A weight in host memory, already converted and packed; `data` must stay valid until from_host
// returns (it synchronizes before returning).
struct HostWeight {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  const void* data = nullptr;
  size_t bytes = 0;
};

class WeightStore {
 public:
  // Returns the weight `name` or an empty Tensor.
  Tensor get(const std::string& name) const;
  size_t total_bytes() const { return total_bytes_; }

  static Result<WeightStore> load(const ModelDefinition& def, const Checkpoint& ckpt, Backend* backend);
  // Allocates every weight first (so a shortage fails before any copy), then copies each with
  // one copy_h2d. bytes must equal dtype_bytes_for(dtype, shape.numel()).
  static Result<WeightStore> from_host(const std::vector<HostWeight>& weights, Backend* backend);

 private:
  std::map<std::string, DeviceBuffer> buffers_;
  std::map<std::string, Tensor> tensors_;
  size_t total_bytes_ = 0;
};

}  // namespace anvil
