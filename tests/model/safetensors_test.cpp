// SafetensorsFile and write_safetensors: a round trip over every dtype and odd shapes, a file
// written by the Python safetensors library, and one test per malformed file, each checking the
// Status code and that the message names the file and the tensor or field at fault.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <numeric>

#include "core/dtype.h"
#include "model/checkpoint/checkpoint.h"
#include "test_files.h"

namespace anvil {
namespace {

using ::anvil::testing::TempDir;
using ::anvil::testing::write_raw_safetensors;

// The Status is an error of `code` whose message holds every one of `words`.
template <typename T>
void expect_error(const Result<T>& r, StatusCode code, std::initializer_list<std::string> words) {
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), code) << r.status().to_string();
  for (const std::string& w : words)
    EXPECT_NE(r.status().message().find(w), std::string::npos) << "'" << w << "' missing from: " << r.status().message();
}

std::vector<uint8_t> iota_bytes(size_t n, uint8_t start) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(Safetensors, RoundTripEveryDtype) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
  std::vector<uint16_t> bf16 = {f32_to_bf16(1.0f), f32_to_bf16(-3.5f), f32_to_bf16(65504.0f)};  // odd count
  std::vector<uint16_t> f16 = {f32_to_f16(0.5f), f32_to_f16(-1.25f), f32_to_f16(7.0f), f32_to_f16(1e-3f), f32_to_f16(2.0f)};
  std::vector<int64_t> i64 = {-1234567890123LL};
  std::vector<uint8_t> i8 = iota_bytes(7, 200);
  std::vector<uint8_t> fp8 = {f32_to_f8e4m3(1.0f), f32_to_f8e4m3(-448.0f), f32_to_f8e4m3(0.125f)};
  std::vector<int32_t> i32 = {7, -8, 9, 10};
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"model.embed_tokens.weight", Tensor(f32.data(), DType::kF32, Shape{2, 3})},
      {"b.bf16", Tensor(bf16.data(), DType::kBF16, Shape{3})},
      {"c.f16", Tensor(f16.data(), DType::kF16, Shape{1, 5})},
      {"scalar.i64", Tensor(i64.data(), DType::kI64, Shape{})},
      {"z.i8", Tensor(i8.data(), DType::kI8, Shape{7, 1, 1, 1})},
      {"fp8", Tensor(fp8.data(), DType::kF8E4M3, Shape{3})},
      {"i32", Tensor(i32.data(), DType::kI32, Shape{2, 2})},
      {"empty", Tensor(nullptr, DType::kU8, Shape{0, 4})},
  };
  ASSERT_TRUE(write_safetensors(path, tensors, {{"format", "pt"}, {"source", "anvil test"}}).is_ok());

  Result<std::unique_ptr<SafetensorsFile>> r = SafetensorsFile::open(path);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const SafetensorsFile& f = **r;
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("source"), "anvil test");
  ASSERT_EQ(f.tensors().size(), tensors.size());
  for (const auto& [name, want] : tensors) {
    SCOPED_TRACE(name);
    ASSERT_EQ(f.tensors().count(name), 1u);
    const CheckpointTensor& got = f.tensors().at(name);
    EXPECT_EQ(got.name, name);
    EXPECT_EQ(got.file, path);
    EXPECT_EQ(got.view.dtype, want.dtype);
    EXPECT_EQ(got.view.shape, want.shape);
    EXPECT_EQ(got.view.device, Device::kCpu);
    ASSERT_EQ(got.view.nbytes(), want.nbytes());
    if (want.nbytes() > 0) {
      EXPECT_EQ(std::memcmp(got.view.data, want.data, want.nbytes()), 0);
      // Data is ordered by element size, so every tensor is aligned to its element size.
      EXPECT_EQ(reinterpret_cast<uintptr_t>(got.view.data) % dtype_size(want.dtype), 0u);
    }
  }
  EXPECT_EQ(f.tensors().at("scalar.i64").view.numel(), 1);
  EXPECT_EQ(f.tensors().at("scalar.i64").view.rank(), 0);
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
}

TEST(Safetensors, ReadsFileWrittenByPythonSafetensors) {
  // Made by tests/model/data/make_python_fixture.py with safetensors.torch.save_file.
  const std::string path = std::string(ANVIL_SOURCE_DIR) + "/tests/model/data/python_written.safetensors";
  Result<std::unique_ptr<SafetensorsFile>> r = SafetensorsFile::open(path);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const auto& t = (*r)->tensors();
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ((*r)->metadata().at("format"), "pt");

  const Tensor& w = t.at("layers.0.weight").view;  // torch.arange(12).reshape(3, 4) / 4, bf16
  ASSERT_EQ(w.dtype, DType::kBF16);
  ASSERT_EQ(w.shape, (Shape{3, 4}));
  for (int i = 0; i < 12; ++i) EXPECT_EQ(bf16_to_f32(w.ptr<uint16_t>()[i]), i / 4.0f) << i;

  const Tensor& b = t.at("layers.0.bias").view;  // [-1.5, 0.25, 3.0], f32
  ASSERT_EQ(b.dtype, DType::kF32);
  ASSERT_EQ(b.shape, (Shape{3}));
  EXPECT_EQ(b.ptr<float>()[0], -1.5f);
  EXPECT_EQ(b.ptr<float>()[1], 0.25f);
  EXPECT_EQ(b.ptr<float>()[2], 3.0f);

  const Tensor& h = t.at("norm.weight").view;  // [1, 2, 3, 4, 5], f16
  ASSERT_EQ(h.dtype, DType::kF16);
  ASSERT_EQ(h.shape, (Shape{5}));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(f16_to_f32(h.ptr<uint16_t>()[i]), i + 1.0f);
}

TEST(Safetensors, MissingFile) {
  TempDir dir;
  const std::string path = dir.file("nope.safetensors");
  expect_error(SafetensorsFile::open(path), StatusCode::kNotFound, {path});
}

TEST(Safetensors, FileShorterThanLengthField) {
  TempDir dir;
  const std::string path = dir.file("short.safetensors");
  ::anvil::testing::write_text(path, "abc");
  expect_error(SafetensorsFile::open(path), StatusCode::kDataLoss, {path, "8-byte header length"});
}

TEST(Safetensors, HeaderLengthPastEof) {
  TempDir dir;
  const std::string path = dir.file("len.safetensors");
  write_raw_safetensors(path, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcd", 1000);
  expect_error(SafetensorsFile::open(path), StatusCode::kDataLoss, {path, "header length 1000", "past the end"});
}

TEST(Safetensors, HeaderNotJson) {
  TempDir dir;
  const std::string path = dir.file("json.safetensors");
  write_raw_safetensors(path, R"({"a":{"dtype":"F32","shape":[1],)", "abcd");
  expect_error(SafetensorsFile::open(path), StatusCode::kDataLoss, {path, "not valid JSON"});
}

TEST(Safetensors, HeaderNotObject) {
  TempDir dir;
  const std::string path = dir.file("array.safetensors");
  write_raw_safetensors(path, "[1, 2, 3]", "");
  expect_error(SafetensorsFile::open(path), StatusCode::kDataLoss, {path, "object"});
}

TEST(Safetensors, UnknownDtype) {
  TempDir dir;
  const std::string path = dir.file("dtype.safetensors");
  write_raw_safetensors(path, R"({"w":{"dtype":"F17","shape":[1],"data_offsets":[0,4]}})", "abcd");
  expect_error(SafetensorsFile::open(path), StatusCode::kDataLoss, {path, "'w'", "F17"});
}

TEST(Safetensors, UnmappedDtypeRefused) {
  TempDir dir;
  const std::string path = dir.file("f64.safetensors");
  write_raw_safetensors(path, R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", "abcdefgh");
  expect_error(SafetensorsFile::open(path), StatusCode::kUnsupported, {path, "'w'", "F64"});
}

TEST(Safetensors, ShapeBytesMismatch) {
  TempDir dir;
  const std::string path = dir.file("mismatch.safetensors");
  write_raw_safetensors(path, R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", std::string(12, 'x'));
  expect_error(SafetensorsFile::open(path), StatusCode::kDataLoss, {path, "'w'", "12 bytes", "needs 16"});
}

TEST(Safetensors, NegativeShape) {
  TempDir dir;
  const std::string path = dir.file("neg.safetensors");
  write_raw_safetensors(path, R"({"w":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}})", std::string(16, 'x'));
  expect_error(SafetensorsFile::open(path), StatusCode::kDataLoss, {path, "'w'", "shape"});
}

TEST(Safetensors, RankAboveFourRefused) {
  TempDir dir;
  const std::string path = dir.file("rank.safetensors");
  write_raw_safetensors(path, R"({"w":{"dtype":"U8","shape":[1,1,1,1,2],"data_offsets":[0,2]}})", "ab");
  expect_error(SafetensorsFile::open(path), StatusCode::kUnsupported, {path, "'w'", "rank 5"});
}

TEST(Safetensors, OffsetsOutOfRange) {
  TempDir dir;
  const std::string path = dir.file("range.safetensors");
  write_raw_safetensors(path,
                        R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                        R"("b":{"dtype":"F32","shape":[6],"data_offsets":[16,40]}})",
                        std::string(32, 'x'));
  expect_error(SafetensorsFile::open(path), StatusCode::kDataLoss, {path, "'b'", "[16, 40]", "32 bytes"});
}

TEST(Safetensors, OffsetsEndBeforeBegin) {
  TempDir dir;
  const std::string path = dir.file("reversed.safetensors");
  write_raw_safetensors(path, R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", std::string(8, 'x'));
  expect_error(SafetensorsFile::open(path), StatusCode::kDataLoss, {path, "'a'", "[8, 4]"});
}

TEST(Safetensors, OverlappingOffsets) {
  TempDir dir;
  const std::string path = dir.file("overlap.safetensors");
  write_raw_safetensors(path,
                        R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                        R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                        std::string(24, 'x'));
  expect_error(SafetensorsFile::open(path), StatusCode::kDataLoss, {path, "'a'", "'b'", "overlaps"});
}

TEST(Safetensors, GapBetweenTensors) {
  TempDir dir;
  const std::string path = dir.file("gap.safetensors");
  write_raw_safetensors(path,
                        R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
                        std::string(24, 'x'));
  expect_error(SafetensorsFile::open(path), StatusCode::kDataLoss, {path, "'b'", "8..16"});
}

TEST(Safetensors, TrailingBytes) {
  TempDir dir;
  const std::string path = dir.file("trailing.safetensors");
  write_raw_safetensors(path, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(12, 'x'));
  expect_error(SafetensorsFile::open(path), StatusCode::kDataLoss, {path, "'a'", "4 bytes after"});
}

TEST(Safetensors, TruncatedFile) {
  TempDir dir;
  const std::string path = dir.file("truncated.safetensors");
  std::vector<float> a(64, 1.0f), b(32, 2.0f);
  ASSERT_TRUE(write_safetensors(path, {{"a", Tensor(a.data(), DType::kF32, Shape{8, 8})},
                                       {"b", Tensor(b.data(), DType::kF32, Shape{32})}})
                  .is_ok());
  ASSERT_TRUE(SafetensorsFile::open(path).is_ok());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 10);
  // Data order is by name within a dtype, so "b" is last and loses its tail.
  expect_error(SafetensorsFile::open(path), StatusCode::kDataLoss, {path, "'b'", "truncated"});
}

TEST(Safetensors, MetadataMustBeStrings) {
  TempDir dir;
  const std::string path = dir.file("meta.safetensors");
  write_raw_safetensors(path, R"({"__metadata__":{"format":3},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                        "x");
  expect_error(SafetensorsFile::open(path), StatusCode::kDataLoss, {path, "__metadata__", "'format'"});
}

TEST(Safetensors, EntryMissingField) {
  TempDir dir;
  const std::string path = dir.file("field.safetensors");
  write_raw_safetensors(path, R"({"a":{"dtype":"U8","shape":[1]}})", "x");
  expect_error(SafetensorsFile::open(path), StatusCode::kDataLoss, {path, "'a'", "data_offsets"});
}

TEST(Safetensors, WriterRefusesDuplicatesAndInt4) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  std::vector<float> v(4, 0.0f);
  Status dup = write_safetensors(path, {{"x", Tensor(v.data(), DType::kF32, Shape{4})},
                                        {"x", Tensor(v.data(), DType::kF32, Shape{4})}});
  EXPECT_EQ(dup.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(dup.message().find("'x'"), std::string::npos) << dup.message();
  Status i4 = write_safetensors(path, {{"q", Tensor(v.data(), DType::kI4, Shape{8})}});
  EXPECT_EQ(i4.code(), StatusCode::kUnsupported);
  EXPECT_NE(i4.message().find("'q'"), std::string::npos) << i4.message();
  EXPECT_FALSE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace anvil
