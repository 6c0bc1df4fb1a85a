// Checkpoint: the tensors of a Hugging Face model folder, mmap'd. A folder holds one
// model.safetensors or shards listed in model.safetensors.index.json. Headers and offsets are
// validated on open; a tensor's bytes are only touched when read.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mmap_file.h"
#include "core/status.h"
#include "core/tensor.h"

namespace anvil {

struct CheckpointTensor {
  std::string name;
  std::string file;  // which file it lives in (for error messages)
  Tensor view;       // points into the mmap; dtype bf16/f16/f32; device kCpu
};

class SafetensorsFile {
 public:
  // Opens and validates one .safetensors file: header length within the file, valid JSON,
  // known dtypes, shapes matching byte lengths, offsets in range and non-overlapping.
  static Result<std::unique_ptr<SafetensorsFile>> open(const std::string& path);
  const std::map<std::string, CheckpointTensor>& tensors() const { return tensors_; }
  const std::string& path() const { return file_.path(); }
  // __metadata__ entries, if any.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  MmapFile file_;
  std::map<std::string, CheckpointTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

class Checkpoint {
 public:
  // Opens DIR/model.safetensors, or the shards named by DIR/model.safetensors.index.json.
  static Result<Checkpoint> open(const std::string& model_dir);

  bool contains(const std::string& name) const;
  // The tensor `name`; a not_found Status naming the tensor and folder if absent.
  Result<CheckpointTensor> get(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, CheckpointTensor> index_;
};

// Writes tensors (CPU, any float dtype) to a .safetensors file, sorted by name, 8-byte aligned
// data, optional __metadata__. Used by `anvil convert`, tests and tools.
Status write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace anvil
