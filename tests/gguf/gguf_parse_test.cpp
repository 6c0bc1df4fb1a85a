// GGUF parsing: every metadata type (from tools/gguf/make_fixtures.py's metadata.gguf), and every
// kind of broken file, hand-built byte by byte, failing with a Status that names file and field.
#include <gtest/gtest.h>

#include "model/checkpoint/gguf_file.h"
#include "gguf_test_util.h"

namespace anvil::gguf {
namespace {

using testing::Builder;
using testing::fixture;

constexpr uint32_t kQ8_0 = 8;

// A valid file: 2 metadata keys, one Q8_0 tensor "w" of ggml dims [32, 2] (68 bytes) at offset 0.
Builder valid_file(uint64_t offset = 0, uint32_t type = kQ8_0, std::vector<uint64_t> dims = {32, 2}) {
  Builder b;
  b.header(1, 2).kv_u32("general.alignment", 32).kv_str("general.architecture", "llama");
  b.tensor("w", dims, type, offset).pad_to(32).zeros(68);
  return b;
}

Result<std::unique_ptr<GgufFile>> parse(const Builder& b) {
  return GgufFile::parse(b.bytes.data(), b.bytes.size(), "test.gguf");
}

// Asserts failure with `code` and a message containing every one of `parts`.
void expect_error(const Builder& b, StatusCode code, std::initializer_list<std::string> parts) {
  auto r = parse(b);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), code) << r.status().to_string();
  EXPECT_NE(r.status().message().find("test.gguf"), std::string::npos) << r.status().message();
  for (const std::string& p : parts) EXPECT_NE(r.status().message().find(p), std::string::npos) << r.status().message();
}

TEST(GgufParse, ValidHandBuiltFile) {
  Builder b = valid_file();
  auto r = parse(b);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const GgufFile& f = **r;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  EXPECT_EQ(f.data_offset() + 68, b.bytes.size());
  ASSERT_EQ(f.tensors().size(), 1u);
  EXPECT_EQ(f.tensors()[0].nbytes, 68u);
  EXPECT_EQ(f.tensors()[0].type, GgmlType::kQ8_0);
  EXPECT_EQ(*f.get_string("general.architecture"), "llama");
}

TEST(GgufParse, Version2IsAccepted) {
  Builder b;
  b.header(0, 1, 2).kv_str("general.architecture", "llama");
  auto r = parse(b);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ((*r)->version(), 2u);
}

TEST(GgufParse, EveryTruncationFailsCleanly) {
  Builder b = valid_file();
  for (size_t n = 0; n < b.bytes.size(); ++n) {
    auto r = GgufFile::parse(b.bytes.data(), n, "cut.gguf");
    ASSERT_FALSE(r.is_ok()) << "prefix of " << n << " bytes parsed";
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << n << ": " << r.status().to_string();
    EXPECT_NE(r.status().message().find("cut.gguf"), std::string::npos);
    EXPECT_NE(r.status().message().find("truncated"), std::string::npos) << n << ": " << r.status().message();
  }
}

TEST(GgufParse, BadMagic) {
  Builder b = valid_file();
  b.bytes[3] = 'L';
  expect_error(b, StatusCode::kDataLoss, {"not a GGUF file", "GGUL"});
}

TEST(GgufParse, BadVersions) {
  Builder v1 = valid_file();
  v1.bytes[4] = 1;
  expect_error(v1, StatusCode::kUnsupported, {"version 1"});
  Builder v9 = valid_file();
  v9.bytes[4] = 9;
  expect_error(v9, StatusCode::kUnsupported, {"version 9"});
  Builder be = valid_file();
  be.bytes[4] = 0;
  be.bytes[7] = 3;
  expect_error(be, StatusCode::kUnsupported, {"big-endian"});
}

TEST(GgufParse, TensorDataPastEndOfFile) {
  expect_error(valid_file(/*offset=*/1024), StatusCode::kDataLoss, {"'w'", "runs past the end"});
  Builder short_data = valid_file();
  short_data.bytes.resize(short_data.bytes.size() - 1);
  expect_error(short_data, StatusCode::kDataLoss, {"'w'", "runs past the end"});
}

TEST(GgufParse, MisalignedOffset) {
  expect_error(valid_file(/*offset=*/8), StatusCode::kDataLoss, {"'w'", "alignment 32"});
}

TEST(GgufParse, UnknownQuantType) {
  expect_error(valid_file(0, /*type=*/99), StatusCode::kUnsupported, {"'w'", "unknown ggml type id 99"});
}

TEST(GgufParse, RowNotAMultipleOfTheBlockSize) {
  expect_error(valid_file(0, kQ8_0, {31, 2}), StatusCode::kDataLoss, {"'w'", "Q8_0 block size 32"});
}

TEST(GgufParse, BadRankAndDims) {
  expect_error(valid_file(0, kQ8_0, {}), StatusCode::kDataLoss, {"'w'", "rank 0"});
  expect_error(valid_file(0, kQ8_0, {32, 1, 1, 1, 1}), StatusCode::kDataLoss, {"'w'", "rank 5"});
  expect_error(valid_file(0, kQ8_0, {32, 0}), StatusCode::kDataLoss, {"'w'", "invalid dimension 0"});
  expect_error(valid_file(0, kQ8_0, {32, 1ull << 40, 1ull << 20}), StatusCode::kDataLoss, {"'w'", "invalid dimension"});
}

TEST(GgufParse, UnknownValueType) {
  Builder b;
  b.header(0, 1).str("my.key").u32(13).u32(0);
  expect_error(b, StatusCode::kDataLoss, {"'my.key'", "unknown value type 13"});
  Builder arr;
  arr.header(0, 1).str("my.arr").u32(9).u32(77).u64(1).u32(0);
  expect_error(arr, StatusCode::kDataLoss, {"'my.arr'", "unknown array element type 77"});
}

TEST(GgufParse, HostileLengthsDoNotAllocate) {
  Builder huge_str;
  huge_str.header(0, 1).str("k").u32(8).u64(1ull << 62);
  expect_error(huge_str, StatusCode::kDataLoss, {"'k'", "exceeds the limit"});
  Builder long_str;  // within the limit but longer than the file
  long_str.header(0, 1).str("k").u32(8).u64(1000).zeros(10);
  expect_error(long_str, StatusCode::kDataLoss, {"'k'", "truncated"});
  Builder huge_key;
  huge_key.header(0, 1).u64(1ull << 63).zeros(16);
  expect_error(huge_key, StatusCode::kDataLoss, {"metadata key #0", "exceeds the limit"});
  Builder huge_array;
  huge_array.header(0, 1).str("a").u32(9).u32(10).u64(1ull << 61).zeros(64);
  expect_error(huge_array, StatusCode::kDataLoss, {"'a'", "cannot fit"});
  Builder huge_string_array;
  huge_string_array.header(0, 1).str("a").u32(9).u32(8).u64(1000000).zeros(64);
  expect_error(huge_string_array, StatusCode::kDataLoss, {"'a'", "cannot fit"});
  Builder many_tensors;
  many_tensors.header(1ull << 40, 0).zeros(64);
  expect_error(many_tensors, StatusCode::kDataLoss, {"tensor count"});
  Builder many_kv;
  many_kv.header(0, 1ull << 50).zeros(64);
  expect_error(many_kv, StatusCode::kDataLoss, {"metadata count"});
}

TEST(GgufParse, DeeplyNestedArraysAreRefused) {
  Builder b;
  b.header(0, 1).str("deep");
  b.u32(9);
  for (int i = 0; i < 10; ++i) b.u32(9).u64(1);
  b.u32(4).u64(1).u32(7);
  expect_error(b, StatusCode::kDataLoss, {"'deep", "nested deeper than 4"});
}

TEST(GgufParse, NestedAndEmptyArrays) {
  Builder b;
  b.header(0, 2).str("nested").u32(9).u32(9).u64(2);
  b.u32(5).u64(2).u32(7).u32(static_cast<uint32_t>(-8));  // [7, -8]
  b.u32(8).u64(0);                                      // []
  b.str("empty").u32(9).u32(8).u64(0);
  auto r = parse(b);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const Value* v = (*r)->find("nested");
  ASSERT_NE(v, nullptr);
  ASSERT_EQ(v->array.size(), 2u);
  EXPECT_EQ(v->elem_type, ValueType::kArray);
  EXPECT_EQ(v->array[0].elem_type, ValueType::kI32);
  EXPECT_EQ(v->array[0].count, 2u);
  EXPECT_EQ(v->array[0].element(1).i, -8);
  EXPECT_EQ(v->array[0].element(0).i, 7);
  EXPECT_EQ(v->array[1].elem_type, ValueType::kString);
  EXPECT_EQ(v->array[1].count, 0u);
  EXPECT_TRUE((*r)->get_string_array("empty")->empty());
}

TEST(GgufParse, DuplicatesAndOverlaps) {
  Builder dup_key;
  dup_key.header(0, 2).kv_u32("a", 1).kv_u32("a", 2);
  expect_error(dup_key, StatusCode::kDataLoss, {"duplicate", "'a'"});

  Builder dup_tensor;
  dup_tensor.header(2, 0).tensor("w", {32}, 0, 0).tensor("w", {32}, 0, 128).pad_to(32).zeros(256);
  expect_error(dup_tensor, StatusCode::kDataLoss, {"duplicate", "'w'"});

  Builder overlap;
  overlap.header(2, 0).tensor("a", {32}, 0, 0).tensor("b", {32}, 0, 96).pad_to(32).zeros(256);
  expect_error(overlap, StatusCode::kDataLoss, {"'a'", "'b'", "overlap"});
}

TEST(GgufParse, MetadataValueBudget) {
  // 3 strings + 1 array = 4 values; a budget of 3 refuses the file, naming the key.
  Builder b;
  b.header(0, 2).kv_str("a", "x").kv_str_array("list", {"p", "q"});
  ParseLimits limits;
  limits.max_values = 3;
  auto r = GgufFile::parse(b.bytes.data(), b.bytes.size(), "test.gguf", limits);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("'list'"), std::string::npos) << r.status().message();
  limits.max_values = 4;
  EXPECT_TRUE(GgufFile::parse(b.bytes.data(), b.bytes.size(), "test.gguf", limits).is_ok());
  // Numeric arrays cost no values and one byte of memory per byte of file.
  Builder nums;
  nums.header(0, 1).str("n").u32(9).u32(0).u64(1000).zeros(1000);
  limits.max_values = 1;
  auto n = GgufFile::parse(nums.bytes.data(), nums.bytes.size(), "test.gguf", limits);
  ASSERT_TRUE(n.is_ok()) << n.status().to_string();
  EXPECT_EQ((*n)->find("n")->raw.size(), 1000u);
  Builder bools;
  bools.header(0, 1).str("flags").u32(9).u32(7).u64(3).pod<uint8_t>(1).pod<uint8_t>(0).pod<uint8_t>(5);
  auto bad = GgufFile::parse(bools.bytes.data(), bools.bytes.size(), "test.gguf");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("'flags'[2]: bool value 5"), std::string::npos) << bad.status().message();
}

TEST(GgufParse, BadAlignmentAndBool) {
  Builder b;
  b.header(0, 1).kv_u32("general.alignment", 48);
  expect_error(b, StatusCode::kDataLoss, {"general.alignment", "power of two"});
  Builder bad_bool;
  bad_bool.header(0, 1).str("flag").u32(7).pod<uint8_t>(2);
  expect_error(bad_bool, StatusCode::kDataLoss, {"'flag'", "bool value 2"});
}

TEST(GgufParse, OpenNamesMissingAndEmptyFiles) {
  auto missing = GgufFile::open("/nonexistent/model.gguf");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/model.gguf"), std::string::npos);
  auto empty = GgufFile::parse(nullptr, 0, "empty.gguf");
  ASSERT_FALSE(empty.is_ok());
  EXPECT_NE(empty.status().message().find("empty.gguf"), std::string::npos);
}

TEST(GgufMetadata, EveryValueType) {
  auto r = GgufFile::open(fixture("metadata.gguf"));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const GgufFile& f = **r;
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  EXPECT_EQ(*f.get_int("t.u8"), 200);
  EXPECT_EQ(*f.get_int("t.i8"), -100);
  EXPECT_EQ(*f.get_int("t.u16"), 60000);
  EXPECT_EQ(*f.get_int("t.i16"), -30000);
  EXPECT_EQ(*f.get_int("t.u32"), 4000000000);
  EXPECT_EQ(*f.get_int("t.i32"), -2000000000);
  EXPECT_EQ(*f.get_int("t.u64"), int64_t{1} << 60);
  EXPECT_EQ(*f.get_int("t.i64"), -(int64_t{1} << 60));
  EXPECT_EQ(*f.get_float("t.f32"), 0.15625);
  EXPECT_EQ(*f.get_float("t.f64"), -1.0e100);
  EXPECT_EQ(*f.get_float("t.u8"), 200.0);
  EXPECT_TRUE(*f.get_bool("t.bool"));
  EXPECT_EQ(*f.get_string("t.str"), "h\xc3\xa9llo w\xc3\xb6rld");
  EXPECT_EQ(*f.get_int_array("t.arr_i32"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(*f.get_string_array("t.arr_str"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(*f.get_float_array("t.arr_f32"), (std::vector<double>{0.5, -1.5}));
  const Value* nested = f.find("t.nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->array.size(), 2u);
  EXPECT_EQ(nested->array[0].count, 2u);
  const Value three = nested->array[1].element(0);
  EXPECT_EQ(three.i + static_cast<int64_t>(three.u), 3);  // signedness as the writer chose

  ASSERT_EQ(f.tensors().size(), 2u);
  const TensorInfo* b = f.find_tensor("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->torch_shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(b->offset % 64, 0u);
  auto vals = f.dequantize_tensor(*b);
  ASSERT_TRUE(vals.is_ok());
  EXPECT_EQ(*vals, (std::vector<float>{0, 1, 2, 3, 4, 5}));
  auto a = f.dequantize_tensor(*f.find_tensor("a"));
  EXPECT_EQ((*a)[31], 31.0f);

  // Typed getters name the key and the actual type on mismatch.
  auto bad = f.get_string("t.u8");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("'t.u8' is uint8, expected string"), std::string::npos) << bad.status().message();
  auto absent = f.get_int("no.such.key");
  EXPECT_EQ(absent.status().code(), StatusCode::kNotFound);
  EXPECT_NE(absent.status().message().find("'no.such.key'"), std::string::npos);
  auto not_ints = f.get_int_array("t.arr_str");
  EXPECT_NE(not_ints.status().message().find("array of string"), std::string::npos) << not_ints.status().message();
}

}  // namespace
}  // namespace anvil::gguf
