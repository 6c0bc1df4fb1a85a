// Every way an engine file can be wrong gives its own clear error, before anything is allocated:
// bad magic, other format version, truncation, header and weight checksums, wrong backend, wrong
// dtype, wrong GPU architecture, too little memory; and bad build options name the option.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "build/engine_builder.h"
#include "build/engine_loader.h"
#include "build_test_util.h"

namespace anvil {
namespace {

using test::golden_dir;

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::vector<char>& b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(b.data(), static_cast<std::streamsize>(b.size()));
}

class EngineErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::scratch_dir();
    good_ = dir_ + "/good.anvil";
    EngineBuildOptions o;
    o.max_batch = 2;
    o.max_num_tokens = 32;
    auto r = build_engine(golden_dir("llama3_gqa"), o, good_);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    bytes_ = read_bytes(good_);
    ASSERT_GT(bytes_.size(), kEnginePreambleBytes);
  }

  // Writes `b` as a new file and returns the load error (the load must fail).
  Status load_error(const std::vector<char>& b, const std::string& name, bool verify = true) {
    const std::string path = dir_ + "/" + name + ".anvil";
    write_bytes(path, b);
    CpuBackend backend;
    EngineLoadOptions lo;
    lo.verify_checksums = verify;
    auto r = load_engine(path, &backend, test::small_runner(), lo);
    EXPECT_FALSE(r.is_ok()) << name << " loaded";
    return r.is_ok() ? Status::ok() : r.status();
  }

  uint64_t u64_at(size_t off) const {
    uint64_t v;
    std::memcpy(&v, bytes_.data() + off, 8);
    return v;
  }

  std::string dir_, good_;
  std::vector<char> bytes_;
};

TEST_F(EngineErrors, GoodFileLoads) {
  CpuBackend backend;
  auto r = load_engine(good_, &backend, test::small_runner());
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
}

TEST_F(EngineErrors, BadMagic) {
  auto b = bytes_;
  b[0] = 'X';
  Status s = load_error(b, "bad_magic");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not an anvil engine"), std::string::npos) << s.message();
  // A safetensors file given as an engine says the same.
  s = load_error(read_bytes(golden_dir("llama3_gqa") + "/model.safetensors"), "safetensors");
  EXPECT_NE(s.message().find("not an anvil engine"), std::string::npos) << s.message();
}

TEST_F(EngineErrors, WrongVersion) {
  auto b = bytes_;
  const uint32_t v = kEngineFormatVersion + 1;
  std::memcpy(b.data() + 8, &v, 4);
  Status s = load_error(b, "version");
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("format version " + std::to_string(v)), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("rebuild it with anvil build"), std::string::npos) << s.message();
}

TEST_F(EngineErrors, Truncated) {
  for (size_t keep : {bytes_.size() - 1, bytes_.size() / 2, static_cast<size_t>(kEnginePreambleBytes + 10)}) {
    std::vector<char> b(bytes_.begin(), bytes_.begin() + static_cast<std::ptrdiff_t>(keep));
    Status s = load_error(b, "truncated");
    EXPECT_EQ(s.code(), StatusCode::kDataLoss);
    EXPECT_NE(s.message().find("truncated"), std::string::npos) << s.message();
  }
  Status s = load_error(std::vector<char>(bytes_.begin(), bytes_.begin() + 20), "tiny");
  EXPECT_NE(s.message().find("not an anvil engine"), std::string::npos) << s.message();
}

TEST_F(EngineErrors, HeaderChecksum) {
  auto b = bytes_;
  // Change one digit of the JSON header (the header stays parseable JSON, only the checksum catches it).
  const size_t header_bytes = u64_at(16);
  std::string header(b.data() + kEnginePreambleBytes, header_bytes);
  const size_t at = header.find("\"max_batch\":2");
  ASSERT_NE(at, std::string::npos);
  b[kEnginePreambleBytes + at + std::strlen("\"max_batch\":")] = '3';
  Status s = load_error(b, "header_checksum");
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("header checksum"), std::string::npos) << s.message();
}

TEST_F(EngineErrors, WeightChecksum) {
  auto file = EngineFile::open(good_);
  ASSERT_TRUE(file.is_ok());
  const EngineHeader& h = file->header();
  const uint64_t data_offset = u64_at(32);
  size_t target = 0;
  for (size_t i = 0; i < h.weights.size(); ++i)
    if (h.weights[i].name == "layers.1.mlp.down.weight") target = i;
  auto b = bytes_;
  b[data_offset + h.weights[target].offset + 5] ^= 0x40;
  Status s = load_error(b, "weight_checksum");
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("layers.1.mlp.down.weight fails its checksum"), std::string::npos) << s.message();
  // With verification off the same file loads (the flag trades safety for speed).
  const std::string path = dir_ + "/weight_checksum.anvil";
  CpuBackend backend;
  EngineLoadOptions lo;
  lo.verify_checksums = false;
  EXPECT_TRUE(load_engine(path, &backend, test::small_runner(), lo).is_ok());
}

TEST_F(EngineErrors, WrongBackend) {
  // A CUDA engine needs no GPU to build when the architecture is given.
  EngineBuildOptions o;
  o.backend = BackendKind::kCuda;
  o.dtype = DType::kBF16;
  o.cuda_arch = 90;
  o.max_batch = 2;
  o.max_num_tokens = 32;
  const std::string path = dir_ + "/cuda.anvil";
  auto built = build_engine(golden_dir("llama3_gqa"), o, path);
  ASSERT_TRUE(built.is_ok()) << built.status().to_string();
  EXPECT_EQ(built->gpu_arch, "sm_90");
  auto file = EngineFile::open(path);
  ASSERT_TRUE(file.is_ok());
  EXPECT_EQ(file->header().weights[0].dtype, DType::kBF16);
  CpuBackend backend;
  auto r = load_engine(path, &backend, test::small_runner());
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("built for the cuda backend"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("rebuild with anvil build --backend cpu"), std::string::npos) << r.status().message();
}

TEST_F(EngineErrors, GpuArchDtypeAndMemoryChecks) {
  auto file = EngineFile::open(good_);
  ASSERT_TRUE(file.is_ok());
  EngineHeader h = file->header();
  h.options.backend = BackendKind::kCuda;
  h.options.dtype = DType::kBF16;
  h.gpu_arch = "sm_90";
  Status s = check_engine_target(h, Device::kCuda, DType::kBF16, "cuda:0 (NVIDIA A100-SXM4-80GB, sm_80)", "m.anvil");
  EXPECT_NE(s.message().find("built for sm_90, this GPU is sm_80: rebuild with anvil build"), std::string::npos) << s.message();
  EXPECT_TRUE(check_engine_target(h, Device::kCuda, DType::kBF16, "cuda:1 (NVIDIA H100 80GB HBM3, sm_90)", "m.anvil").is_ok());
  s = check_engine_target(h, Device::kCuda, DType::kF16, "cuda:0 (NVIDIA H100 80GB HBM3, sm_90)", "m.anvil");
  EXPECT_NE(s.message().find("holds bf16 weights; this backend computes in fp16"), std::string::npos) << s.message();

  MemoryInfo mem;
  mem.free_bytes = 1 << 20;
  s = check_engine_memory(3u << 20, mem, "cuda:0", "m.anvil");
  EXPECT_EQ(s.code(), StatusCode::kOutOfMemory);
  EXPECT_NE(s.message().find("needs 3 MiB for its weights; cuda:0 has 1 MiB free"), std::string::npos) << s.message();
  EXPECT_TRUE(check_engine_memory(1u << 20, mem, "cuda:0", "m.anvil").is_ok());
}

TEST(EngineBuildOptions, BadOptionsNameTheOption) {
  const std::string out = test::scratch_dir() + "/x.anvil";
  EngineBuildOptions o;
  o.dtype = DType::kBF16;  // CPU computes in f32
  auto r = build_engine(golden_dir("qwen2"), o, out);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("use --dtype f32"), std::string::npos) << r.status().message();

  o = EngineBuildOptions();
  o.backend = BackendKind::kCuda;
  o.dtype = DType::kBF16;  // no GPU here, no --cuda-arch
  r = build_engine(golden_dir("qwen2"), o, out);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("--cuda-arch"), std::string::npos) << r.status().message();

  o = EngineBuildOptions();
  o.kv_block_size = 12;
  r = build_engine(golden_dir("qwen2"), o, out);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("--kv-block-size 12"), std::string::npos) << r.status().message();
  EXPECT_FALSE(std::filesystem::exists(out));

  EXPECT_EQ(gpu_arch_from_device_name("cuda:0 (NVIDIA H100 80GB HBM3, sm_90)"), "sm_90");
  EXPECT_EQ(gpu_arch_from_device_name("cpu"), "");
}

}  // namespace
}  // namespace anvil
