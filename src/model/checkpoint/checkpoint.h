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
  Tensor view;       // points into the mmap (read-only); any safetensors dtype anvil maps (F32, F16,
                     // BF16, F8_E4M3, F8_E5M2, I8, U8, I32, I64): loaders refuse what they cannot use
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
  // Opens the shards named by DIR/model.safetensors.index.json, else DIR/model.safetensors, else
  // every DIR/*.safetensors; `model_dir` may also be one .safetensors file. A tensor name found in
  // two files, a missing shard, or an index entry absent from its shard is an error.
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

// Writes tensors (CPU; any dtype but int4) to a .safetensors file that the Python safetensors
// library also reads: header keys sorted by name, optional __metadata__, the data section 8-byte
// aligned and packed with no gaps, ordered by element size (largest first) then name so each tensor
// starts at a multiple of its element size. Writes PATH.partial, then renames it to PATH.
// Used by `anvil convert`, tests and tools.
Status write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace anvil
