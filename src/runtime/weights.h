// Loading a model's weights onto a backend: every WeightSource of the ModelDefinition is read
// from the checkpoint (concatenating sources along dim 0), checked for shape and dtype, converted
// to the backend's compute dtype and uploaded. Missing, mis-shaped, non-float and unexpected
// extra tensors are errors naming the tensor and the file.
#pragma once

#include <map>
#include <string>

#include "backend/backend.h"
#include "model/archs/arch.h"
#include "model/checkpoint/checkpoint.h"

namespace anvil {

class WeightStore {
 public:
  // Returns the weight `name` or an empty Tensor.
  Tensor get(const std::string& name) const;
  size_t total_bytes() const { return total_bytes_; }

  static Result<WeightStore> load(const ModelDefinition& def, const Checkpoint& ckpt, Backend* backend);

 private:
  std::map<std::string, DeviceBuffer> buffers_;
  std::map<std::string, Tensor> tensors_;
  size_t total_bytes_ = 0;
};

}  // namespace anvil
