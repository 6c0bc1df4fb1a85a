// Checkpoint: every tensor of a model folder, by name. Sources, in order of preference:
// model.safetensors.index.json (its weight_map names the shard of each tensor), model.safetensors,
// else every *.safetensors in the folder. A tensor name lives in exactly one file.
#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/logging.h"
#include "model/checkpoint/checkpoint.h"

namespace anvil {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// Adds every tensor of `file` to `index`, refusing a name already held by another file.
Status add_tensors(const SafetensorsFile& file, std::map<std::string, CheckpointTensor>& index) {
  for (const auto& [name, tensor] : file.tensors()) {
    auto [it, inserted] = index.emplace(name, tensor);
    if (!inserted)
      return invalid_argument("tensor '" + name + "' appears in both '" + it->second.file + "' and '" + file.path() +
                              "'");
  }
  return Status::ok();
}

// Shard names come from a JSON file, so they must stay inside the folder.
bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos;
}

}  // namespace

Result<Checkpoint> Checkpoint::open(const std::string& model_dir) {
  Checkpoint ckpt;
  ckpt.dir_ = model_dir;
  std::error_code ec;
  if (fs::is_regular_file(model_dir, ec)) {  // a lone .safetensors file
    ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f, SafetensorsFile::open(model_dir));
    ANVIL_RETURN_IF_ERROR(add_tensors(*f, ckpt.index_));
    ckpt.files_.push_back(std::move(f));
    return ckpt;
  }
  if (!fs::is_directory(model_dir, ec)) return not_found("model folder '" + model_dir + "' does not exist");

  const fs::path dir(model_dir);
  const std::string index_path = (dir / "model.safetensors.index.json").string();
  if (fs::is_regular_file(index_path, ec)) {
    ANVIL_ASSIGN_OR_RETURN(std::string text, read_file(index_path));
    Json index;
    try {
      index = Json::parse(text);
    } catch (const Json::exception& e) {
      return invalid_argument(index_path + ": not valid JSON: " + e.what());
    }
    if (!index.is_object()) return invalid_argument(index_path + ": expected a JSON object");
    auto map_it = index.find("weight_map");
    if (map_it == index.end()) return not_found(index_path + ": required field 'weight_map' is missing");
    if (!map_it->is_object()) return invalid_argument(index_path + ": field 'weight_map' must be an object");

    // Open each shard once, in name order, then check that each listed tensor is where the index says.
    std::map<std::string, std::string> first_tensor_of_shard;
    for (const auto& [name, shard] : map_it->items()) {
      if (!shard.is_string())
        return invalid_argument(index_path + ": weight_map entry '" + name + "' must be a file name string");
      const std::string shard_name = shard.get<std::string>();
      if (!is_plain_file_name(shard_name))
        return invalid_argument(index_path + ": weight_map entry '" + name + "' names '" + shard_name +
                                "', which is not a file name inside the folder");
      first_tensor_of_shard.emplace(shard_name, name);
    }
    std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;
    for (const auto& [shard_name, first_tensor] : first_tensor_of_shard) {
      const std::string shard_path = (dir / shard_name).string();
      if (!fs::is_regular_file(shard_path, ec))
        return not_found(index_path + ": shard '" + shard_name + "' (holding tensor '" + first_tensor +
                         "') is missing from " + model_dir);
      ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f, SafetensorsFile::open(shard_path));
      ANVIL_RETURN_IF_ERROR(add_tensors(*f, ckpt.index_));
      std::shared_ptr<SafetensorsFile> shared = std::move(f);
      shards.emplace(shard_name, shared);
      ckpt.files_.push_back(std::move(shared));
    }
    std::set<std::string> listed;
    for (const auto& [name, shard] : map_it->items()) {
      const std::string shard_name = shard.get<std::string>();
      const SafetensorsFile& f = *shards.at(shard_name);
      if (f.tensors().count(name) == 0)
        return not_found(index_path + ": tensor '" + name + "' is listed in shard '" + shard_name +
                         "' but that shard has no such tensor");
      listed.insert(name);
    }
    size_t unlisted = ckpt.index_.size() - listed.size();
    if (unlisted > 0)
      ANVIL_LOG_WARN("%s: %zu tensors in the shards are not listed in the index; they are loaded as well",
                     index_path.c_str(), unlisted);
    return ckpt;
  }

  std::vector<std::string> paths;
  const std::string single = (dir / "model.safetensors").string();
  if (fs::is_regular_file(single, ec)) {
    paths.push_back(single);
  } else {
    for (const fs::directory_entry& e : fs::directory_iterator(dir, ec))
      if (e.is_regular_file(ec) && e.path().extension() == ".safetensors") paths.push_back(e.path().string());
    if (ec) return invalid_argument("cannot list model folder '" + model_dir + "': " + ec.message());
    std::sort(paths.begin(), paths.end());
  }
  if (paths.empty())
    return not_found("no model.safetensors, model.safetensors.index.json or *.safetensors in '" + model_dir + "'");
  for (const std::string& p : paths) {
    ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f, SafetensorsFile::open(p));
    ANVIL_RETURN_IF_ERROR(add_tensors(*f, ckpt.index_));
    ckpt.files_.push_back(std::move(f));
  }
  return ckpt;
}

bool Checkpoint::contains(const std::string& name) const { return index_.count(name) != 0; }

Result<CheckpointTensor> Checkpoint::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) return not_found("tensor '" + name + "' not found in checkpoint '" + dir_ + "'");
  return it->second;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, t] : index_) out.push_back(name);
  return out;
}

}  // namespace anvil
