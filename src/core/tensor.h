// Tensor: a non-owning view of contiguous row-major memory on one device, with up to 4 dims.
// Ownership lives elsewhere (backend buffers, mmap'd files, std::vector).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/dtype.h"

namespace anvil {

enum class Device : uint8_t { kCpu, kCuda };

struct Shape {
  static constexpr int kMaxDims = 4;
  std::array<int64_t, kMaxDims> dims{};
  int rank = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> d) {
    for (int64_t v : d) dims[rank++] = v;
  }
  int64_t operator[](int i) const { return dims[i]; }
  int64_t& operator[](int i) { return dims[i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= dims[i];
    return n;
  }
  bool operator==(const Shape& o) const {
    if (rank != o.rank) return false;
    for (int i = 0; i < rank; ++i)
      if (dims[i] != o.dims[i]) return false;
    return true;
  }
  std::string to_string() const {
    std::string s = "[";
    for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
    return s + "]";
  }
};

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Shape shape;
  Device device = Device::kCpu;

  Tensor() = default;
  Tensor(void* d, DType t, Shape s, Device dev = Device::kCpu) : data(d), dtype(t), shape(s), device(dev) {}

  bool defined() const { return data != nullptr; }
  int64_t numel() const { return shape.numel(); }
  size_t nbytes() const { return dtype_bytes_for(dtype, static_cast<size_t>(numel())); }
  int rank() const { return shape.rank; }
  int64_t dim(int i) const { return shape[i < 0 ? shape.rank + i : i]; }
  // Elements in one outer row (product of all dims but the first).
  int64_t row_size() const { return shape.rank == 0 ? 1 : numel() / shape[0]; }

  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }

  // Rows [begin, end) of the first dim, as a view.
  Tensor rows(int64_t begin, int64_t end) const {
    Tensor t = *this;
    t.shape[0] = end - begin;
    t.data = static_cast<uint8_t*>(data) + dtype_bytes_for(dtype, static_cast<size_t>(begin * row_size()));
    return t;
  }
  // Same memory, new shape (numel must match).
  Tensor view(Shape s) const {
    Tensor t = *this;
    t.shape = s;
    return t;
  }
};

}  // namespace anvil
