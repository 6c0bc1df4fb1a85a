// CUDA attention (split-KV decode, tiled prefill, naive reference) against a float64 CPU reference
// and CpuBackend::attention: random q/k/v, shuffled block tables, odd lengths, GQA/MQA, head_dim
// 64/128, bf16/fp16, mixed batches, a 32k decode, CUDA-graph replay; the decode kernels' split
// merge both in the last CTA (zeroed workspace, counters left zero) and in the separate combine
// kernel; the automatic decode kernel (v3 up to 16 heads per KV head), v2, the tensor-core v3 and
// the frozen v1 each driven explicitly. Skips without a GPU.
// Tolerance: relative L2 error of the whole output < 1e-2 (bf16) or 2e-3 (fp16), and of every
// (token, head) row < 4x that. The benchmark (AttentionBench) runs only with ANVIL_ATTN_BENCH=1.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/ops/attention.h"
#include "core/dtype.h"

namespace anvil::cuda {
namespace {

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define SKIP_WITHOUT_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device"

// Owns one cudaMalloc allocation.
class DevBuf {
 public:
  DevBuf() = default;
  explicit DevBuf(size_t bytes) : bytes_(bytes) {
    if (bytes > 0 && cudaMalloc(&ptr_, bytes) != cudaSuccess) ptr_ = nullptr;
  }
  ~DevBuf() { cudaFree(ptr_); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

template <typename T>
DevBuf upload(const std::vector<T>& v) {
  DevBuf b(std::max<size_t>(1, v.size() * sizeof(T)));
  if (!v.empty()) {
    EXPECT_EQ(cudaMemcpy(b.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  return b;
}

uint16_t to_bits(DType t, float f) { return t == DType::kBF16 ? f32_to_bf16(f) : f32_to_f16(f); }
float from_bits(DType t, uint16_t h) { return t == DType::kBF16 ? bf16_to_f32(h) : f16_to_f32(h); }

struct SeqSpec {
  int q_len;
  int ctx;
};

struct Config {
  DType dtype = DType::kBF16;
  int hq = 8, hkv = 2, d = 128, block_size = 16;
  std::vector<SeqSpec> seqs;
};

// A batch on the host: metadata, and q / caches both as dtype bits and as the floats they hold.
struct Problem {
  Config cfg;
  int num_tokens = 0, num_blocks = 0, max_blocks_per_seq = 0, max_q = 0, max_ctx = 0;
  std::vector<int32_t> seq_starts, context_lens, block_tables;
  std::vector<uint16_t> q_bits, k_bits, v_bits;
  std::vector<float> q, k, v;
};

// Fills `bits`/`vals` with n uniform values in [-range, range], rounded to the dtype.
void fill_random(DType t, size_t n, float range, std::mt19937& rng, std::vector<uint16_t>& bits,
                 std::vector<float>& vals) {
  std::uniform_real_distribution<float> u(-range, range);
  bits.resize(n);
  vals.resize(n);
  for (size_t i = 0; i < n; ++i) {
    bits[i] = to_bits(t, u(rng));
    vals[i] = from_bits(t, bits[i]);
  }
}

// Sequences get their blocks from a shuffled pool (shuffle = true) or in order; the cache holds a
// few spare blocks and random data everywhere, and unused table entries point at spare blocks.
Problem make_problem(const Config& c, uint32_t seed, bool shuffle = true) {
  Problem p;
  p.cfg = c;
  std::mt19937 rng(seed);
  p.seq_starts.push_back(0);
  int total_blocks = 0;
  for (const SeqSpec& s : c.seqs) {
    p.seq_starts.push_back(p.seq_starts.back() + s.q_len);
    p.context_lens.push_back(s.ctx);
    p.max_q = std::max(p.max_q, s.q_len);
    p.max_ctx = std::max(p.max_ctx, s.ctx);
    const int nb = (s.ctx + c.block_size - 1) / c.block_size;
    p.max_blocks_per_seq = std::max(p.max_blocks_per_seq, nb);
    total_blocks += nb;
  }
  p.max_blocks_per_seq += 1;
  p.num_tokens = p.seq_starts.back();
  p.num_blocks = total_blocks + 3;
  std::vector<int32_t> pool(p.num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  if (shuffle) std::shuffle(pool.begin(), pool.end(), rng);
  p.block_tables.assign(c.seqs.size() * p.max_blocks_per_seq, pool.back());
  int next = 0;
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    const int nb = (c.seqs[s].ctx + c.block_size - 1) / c.block_size;
    for (int b = 0; b < nb; ++b) p.block_tables[s * p.max_blocks_per_seq + b] = pool[next++];
  }
  const size_t cache_elems = static_cast<size_t>(p.num_blocks) * c.hkv * c.block_size * c.d;
  fill_random(c.dtype, static_cast<size_t>(p.num_tokens) * c.hq * c.d, 3.0f, rng, p.q_bits, p.q);
  fill_random(c.dtype, cache_elems, 1.0f, rng, p.k_bits, p.k);
  fill_random(c.dtype, cache_elems, 1.0f, rng, p.v_bits, p.v);
  return p;
}

// float64 reference: out [T, Hq, D].
std::vector<double> reference(const Problem& p, float scale) {
  const Config& c = p.cfg;
  const int group = c.hq / c.hkv;
  std::vector<double> out(static_cast<size_t>(p.num_tokens) * c.hq * c.d, 0.0);
  std::vector<double> sc;
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    const int q_len = c.seqs[s].q_len, ctx = c.seqs[s].ctx;
    const int32_t* table = &p.block_tables[s * p.max_blocks_per_seq];
    for (int i = 0; i < q_len; ++i) {
      const int t = p.seq_starts[s] + i;
      const int pos = ctx - q_len + i;
      for (int h = 0; h < c.hq; ++h) {
        const int kvh = h / group;
        const float* qv = &p.q[(static_cast<size_t>(t) * c.hq + h) * c.d];
        auto row = [&](int j) {
          const size_t blk = static_cast<size_t>(table[j / c.block_size]);
          return ((blk * c.hkv + kvh) * c.block_size + j % c.block_size) * c.d;
        };
        sc.assign(pos + 1, 0.0);
        double mx = -1e300;
        for (int j = 0; j <= pos; ++j) {
          const size_t off = row(j);
          double dot = 0;
          for (int e = 0; e < c.d; ++e) dot += static_cast<double>(qv[e]) * p.k[off + e];
          sc[j] = dot * scale;
          mx = std::max(mx, sc[j]);
        }
        double den = 0;
        double* o = &out[(static_cast<size_t>(t) * c.hq + h) * c.d];
        for (int j = 0; j <= pos; ++j) {
          const double w = std::exp(sc[j] - mx);
          den += w;
          const size_t off = row(j);
          for (int e = 0; e < c.d; ++e) o[e] += w * p.v[off + e];
        }
        for (int e = 0; e < c.d; ++e) o[e] /= den;
      }
    }
  }
  return out;
}

// The problem uploaded to the device.
struct DeviceProblem {
  DevBuf q, k, v, out, seq_starts, context_lens, block_tables, workspace;
  AttentionLaunch launch;
};

// Hints default to the exact values; `pad` adds to every hint (graph-capture style bounds). The
// workspace is zeroed and flagged so (the decode kernel merges splits in its last CTA) unless
// `zeroed` is false.
DeviceProblem upload_problem(const Problem& p, bool with_workspace, int pad = 0, bool zeroed = true) {
  const Config& c = p.cfg;
  DeviceProblem d;
  d.q = upload(p.q_bits);
  d.k = upload(p.k_bits);
  d.v = upload(p.v_bits);
  d.out = DevBuf(static_cast<size_t>(p.num_tokens + pad) * c.hq * c.d * 2);
  EXPECT_EQ(cudaMemset(d.out.get(), 0xff, d.out.bytes()), cudaSuccess);  // NaN sentinel
  d.seq_starts = upload(p.seq_starts);
  d.context_lens = upload(p.context_lens);
  d.block_tables = upload(p.block_tables);
  AttentionLaunch& l = d.launch;
  l.q = d.q.get();
  l.out = d.out.get();
  l.k_cache = d.k.get();
  l.v_cache = d.v.get();
  l.dtype = c.dtype;
  l.num_heads = c.hq;
  l.num_kv_heads = c.hkv;
  l.head_dim = c.d;
  l.block_size = c.block_size;
  l.scale = 1.0f / std::sqrt(static_cast<float>(c.d));
  l.batch.num_tokens = p.num_tokens + pad;
  l.batch.num_seqs = static_cast<int32_t>(c.seqs.size());
  l.batch.max_query_len = p.max_q + pad;
  l.batch.max_context_len = p.max_ctx + pad;
  l.batch.max_blocks_per_seq = p.max_blocks_per_seq;
  l.batch.seq_starts = d.seq_starts.as<int32_t>();
  l.batch.context_lens = d.context_lens.as<int32_t>();
  l.batch.block_tables = d.block_tables.as<int32_t>();
  if (with_workspace) {
    const size_t ws = attention_workspace_bytes(l.batch.num_seqs, c.hq, c.hkv, c.d);
    d.workspace = DevBuf(ws);
    // Nonzero garbage unless zeroed: a path that ignores the flag and trusts the counters fails.
    EXPECT_EQ(cudaMemset(d.workspace.get(), zeroed ? 0 : 0x5a, ws), cudaSuccess);
    l.workspace = d.workspace.get();
    l.workspace_bytes = ws;
    l.workspace_zeroed = zeroed;
  }
  return d;
}

// The split counters at the end of a zeroed workspace must be zero again after every launch.
void expect_counters_zero(const DeviceProblem& d, const std::string& what) {
  if (!d.launch.workspace_zeroed || d.workspace.get() == nullptr) return;
  const size_t n = d.workspace.bytes() / 256;  // one int32 counter per 256 bytes, at the end
  std::vector<int32_t> c(n);
  ASSERT_EQ(cudaMemcpy(c.data(), d.workspace.as<char>() + d.workspace.bytes() - n * 4 - (d.workspace.bytes() - n * 4) % 16,
                       n * 4, cudaMemcpyDeviceToHost),
            cudaSuccess);
  const size_t nonzero = static_cast<size_t>(std::count_if(c.begin(), c.end(), [](int32_t v) { return v != 0; }));
  EXPECT_EQ(nonzero, 0u) << what << ": split counters left nonzero";
}

std::vector<float> download_out(const DeviceProblem& d, const Problem& p) {
  const size_t n = static_cast<size_t>(p.num_tokens) * p.cfg.hq * p.cfg.d;
  std::vector<uint16_t> bits(n);
  EXPECT_EQ(cudaMemcpy(bits.data(), d.out.get(), n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = from_bits(p.cfg.dtype, bits[i]);
  return out;
}

struct RunOptions {
  bool workspace = true;
  int decode_splits = 0;      // 0 = automatic
  int prefill_warp_rows = 0;  // 0 = automatic
  bool fused_merge = true;    // zeroed workspace: splits merged by the decode kernel's last CTA
  int decode_version = 0;     // 1, 2, 3: that decode kernel (0: automatic)
  int max_decode_seqs = -1;
};

// Runs one path and returns the output (empty on failure, with a test failure recorded).
std::vector<float> run_path(const Problem& p, AttentionPath path, RunOptions opt = {}) {
  DeviceProblem d = upload_problem(p, opt.workspace, 0, opt.fused_merge);
  d.launch.path = path;
  d.launch.decode_splits = opt.decode_splits;
  d.launch.prefill_warp_rows = opt.prefill_warp_rows;
  d.launch.decode_version = opt.decode_version;
  d.launch.max_decode_seqs = opt.max_decode_seqs;
  const Status st = launch_attention(d.launch, nullptr);
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  const cudaError_t err = cudaDeviceSynchronize();
  EXPECT_EQ(err, cudaSuccess) << cudaGetErrorString(err);
  if (!st.is_ok() || err != cudaSuccess) return {};
  expect_counters_zero(d, "run_path");
  return download_out(d, p);
}

double tolerance(DType t) { return t == DType::kBF16 ? 1e-2 : 2e-3; }

// Relative L2 error of the whole output and of the worst (token, head) row.
void expect_close(const std::vector<float>& got, const std::vector<double>& want, const Config& c,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const double tol = tolerance(c.dtype);
  double num = 0, den = 0, worst = 0;
  size_t worst_row = 0;
  for (size_t r = 0; r < got.size() / c.d; ++r) {
    double rn = 0, rd = 0;
    for (int e = 0; e < c.d; ++e) {
      const double g = got[r * c.d + e], w = want[r * c.d + e];
      rn += (g - w) * (g - w);
      rd += w * w;
    }
    num += rn;
    den += rd;
    const double rel = std::isfinite(rn) ? std::sqrt(rn / std::max(rd, 1e-30)) : INFINITY;
    if (!(rel <= worst)) {
      worst = rel;
      worst_row = r;
    }
  }
  const double rel = std::sqrt(num / std::max(den, 1e-30));
  EXPECT_LT(rel, tol) << what;
  EXPECT_LT(worst, 4 * tol) << what << ": worst row token " << worst_row / c.hq << " head " << worst_row % c.hq;
}

std::string describe(const Config& c) {
  std::string s = std::string(dtype_name(c.dtype)) + " Hq=" + std::to_string(c.hq) + " Hkv=" + std::to_string(c.hkv) +
                  " D=" + std::to_string(c.d) + " bs=" + std::to_string(c.block_size) + " seqs(q/ctx)=";
  for (const SeqSpec& q : c.seqs) s += std::to_string(q.q_len) + "/" + std::to_string(q.ctx) + " ";
  return s;
}

// Every path against the float64 reference.
void check_all_paths(const Config& c, uint32_t seed) {
  const Problem p = make_problem(c, seed);
  const std::vector<double> want = reference(p, 1.0f / std::sqrt(static_cast<float>(c.d)));
  const std::string what = describe(c);
  expect_close(run_path(p, AttentionPath::kAuto), want, c, "auto " + what);
  expect_close(run_path(p, AttentionPath::kAuto, {.decode_splits = 7}), want, c, "auto, 7 splits " + what);
  expect_close(run_path(p, AttentionPath::kAuto, {.decode_splits = 7, .fused_merge = false}), want, c,
               "auto, 7 splits, combine kernel " + what);
  expect_close(run_path(p, AttentionPath::kAuto, {.decode_version = 1}), want, c, "auto, v1 decode " + what);
  expect_close(run_path(p, AttentionPath::kAuto, {.decode_version = 2}), want, c, "auto, v2 decode " + what);
  expect_close(run_path(p, AttentionPath::kAuto, {.decode_splits = 7, .decode_version = 2}), want, c,
               "auto, v2 decode, 7 splits " + what);
  if (c.hq / c.hkv <= 16) {
    expect_close(run_path(p, AttentionPath::kAuto, {.decode_version = 3}), want, c, "auto, v3 decode " + what);
  }
  expect_close(run_path(p, AttentionPath::kPrefill, {.prefill_warp_rows = 16}), want, c, "prefill 16 " + what);
  expect_close(run_path(p, AttentionPath::kPrefill, {.prefill_warp_rows = 32}), want, c, "prefill 32 " + what);
  expect_close(run_path(p, AttentionPath::kReference), want, c, "reference " + what);
  if (p.max_q == 1) {
    expect_close(run_path(p, AttentionPath::kDecode), want, c, "decode " + what);
    expect_close(run_path(p, AttentionPath::kDecode, {.workspace = false}), want, c, "decode no-split " + what);
    expect_close(run_path(p, AttentionPath::kDecode, {.decode_splits = 3}), want, c, "decode 3 splits " + what);
    expect_close(run_path(p, AttentionPath::kDecode, {.decode_splits = 3, .decode_version = 2}), want, c,
                 "decode v2, 3 splits " + what);
  }
}

const std::vector<SeqSpec> kMixed = {{17, 17}, {1, 97}, {97, 1000}, {1, 1}, {1, 1000}, {5, 40}, {1, 17}};
const std::vector<SeqSpec> kDecodeOnly = {{1, 1}, {1, 17}, {1, 97}, {1, 1000}, {1, 64}, {1, 2500}};

struct HeadShape {
  int hq, hkv;
};
// GQA ratios 1, 3, 4, 8, 32 (MQA) and MQA with 8 heads.
const HeadShape kHeadShapes[] = {{4, 4}, {6, 2}, {8, 2}, {16, 2}, {8, 1}, {32, 1}};

TEST(CudaAttention, MixedBatchesAllShapes) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 1;
  const int block_sizes[] = {16, 32, 64};
  for (DType t : {DType::kBF16, DType::kF16}) {
    for (int d : {64, 128}) {
      for (const HeadShape& h : kHeadShapes) {
        Config c;
        c.dtype = t;
        c.hq = h.hq;
        c.hkv = h.hkv;
        c.d = d;
        c.block_size = block_sizes[seed % 3];
        c.seqs = kMixed;
        check_all_paths(c, seed++);
      }
    }
  }
}

TEST(CudaAttention, DecodeBatchesAllShapes) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 100;
  for (DType t : {DType::kBF16, DType::kF16}) {
    for (int d : {64, 128}) {
      for (const HeadShape& h : kHeadShapes) {
        for (int bs : {16, 64}) {
          Config c;
          c.dtype = t;
          c.hq = h.hq;
          c.hkv = h.hkv;
          c.d = d;
          c.block_size = bs;
          c.seqs = kDecodeOnly;
          check_all_paths(c, seed++);
        }
      }
    }
  }
}

TEST(CudaAttention, LongPrefillAndChunkedPrefill) {
  SKIP_WITHOUT_GPU();
  Config c;
  c.hq = 8;
  c.hkv = 2;
  c.seqs = {{1000, 1000}, {300, 2500}, {1, 3000}};
  check_all_paths(c, 7);
  c.dtype = DType::kF16;
  c.d = 64;
  c.block_size = 32;
  check_all_paths(c, 8);
}

TEST(CudaAttention, LongDecodeSplitKv) {
  SKIP_WITHOUT_GPU();
  Config c;
  c.hq = 16;
  c.hkv = 2;
  c.d = 128;
  c.block_size = 16;
  c.seqs = {{1, 32768}, {1, 20001}, {1, 3}};
  const Problem p = make_problem(c, 11);
  const std::vector<double> want = reference(p, 1.0f / std::sqrt(128.0f));
  expect_close(run_path(p, AttentionPath::kAuto), want, c, "32k decode auto");
  expect_close(run_path(p, AttentionPath::kAuto, {.workspace = false}), want, c, "32k decode, one split");
  expect_close(run_path(p, AttentionPath::kAuto, {.decode_splits = 128}), want, c, "32k decode, 128 splits");
  expect_close(run_path(p, AttentionPath::kAuto, {.decode_splits = 128, .fused_merge = false}), want, c,
               "32k decode, 128 splits, combine kernel");
  expect_close(run_path(p, AttentionPath::kAuto, {.decode_splits = 49}), want, c, "32k decode, 49 splits");
  expect_close(run_path(p, AttentionPath::kPrefill), want, c, "32k decode via prefill kernel");
}

// The tensor-core decode kernel (v3) driven explicitly: GQA 1 / 4 / 8, head_dim 64 / 128, blocks
// 16 / 64, bf16 and f16, decode contexts 1, 15, 64, 1000 and 5000 (several splits) in one batch
// with prefill rows (the decode kernel skips them, the prefill kernel serves them), with the
// automatic split count, forced splits merged in the last CTA or by the combine kernel, and one
// split (no workspace).
TEST(CudaAttention, DecodeV3MixedBatches) {
  SKIP_WITHOUT_GPU();
  const std::vector<SeqSpec> seqs = {{1, 1}, {17, 17}, {1, 15}, {1, 64}, {5, 40}, {1, 1000}, {1, 5000}};
  const HeadShape heads[] = {{2, 2}, {8, 2}, {16, 2}};
  uint32_t seed = 500;
  for (DType t : {DType::kBF16, DType::kF16}) {
    for (int d : {64, 128}) {
      for (const HeadShape& h : heads) {
        for (int bs : {16, 64}) {
          Config c;
          c.dtype = t;
          c.hq = h.hq;
          c.hkv = h.hkv;
          c.d = d;
          c.block_size = bs;
          c.seqs = seqs;
          const Problem p = make_problem(c, seed++);
          const std::vector<double> want = reference(p, 1.0f / std::sqrt(static_cast<float>(d)));
          const std::string what = describe(c);
          expect_close(run_path(p, AttentionPath::kAuto, {.decode_version = 3}), want, c, "v3 " + what);
          expect_close(run_path(p, AttentionPath::kAuto, {.decode_splits = 9, .decode_version = 3}), want, c,
                       "v3, 9 splits " + what);
          expect_close(run_path(p, AttentionPath::kAuto, {.decode_splits = 9, .fused_merge = false, .decode_version = 3}),
                       want, c, "v3, 9 splits, combine kernel " + what);
          expect_close(run_path(p, AttentionPath::kAuto, {.workspace = false, .decode_version = 3}), want, c,
                       "v3, one split " + what);
        }
      }
    }
  }
}

// The physical placement of blocks must not change a single bit of the output.
TEST(CudaAttention, PagedEqualsContiguous) {
  SKIP_WITHOUT_GPU();
  for (DType t : {DType::kBF16, DType::kF16}) {
    Config c;
    c.dtype = t;
    c.seqs = kMixed;
    const Problem shuffled = make_problem(c, 21, true);
    Problem contiguous = make_problem(c, 21, false);
    // Same logical K/V: copy each sequence's blocks from the shuffled layout into the in-order one.
    const size_t blk = static_cast<size_t>(c.hkv) * c.block_size * c.d;
    for (size_t s = 0; s < c.seqs.size(); ++s) {
      const int nb = (c.seqs[s].ctx + c.block_size - 1) / c.block_size;
      for (int b = 0; b < nb; ++b) {
        const size_t src = shuffled.block_tables[s * shuffled.max_blocks_per_seq + b] * blk;
        const size_t dst = contiguous.block_tables[s * contiguous.max_blocks_per_seq + b] * blk;
        std::copy_n(&shuffled.k_bits[src], blk, &contiguous.k_bits[dst]);
        std::copy_n(&shuffled.v_bits[src], blk, &contiguous.v_bits[dst]);
      }
    }
    contiguous.q_bits = shuffled.q_bits;
    for (AttentionPath path : {AttentionPath::kAuto, AttentionPath::kPrefill}) {
      const std::vector<float> a = run_path(shuffled, path);
      const std::vector<float> b = run_path(contiguous, path);
      ASSERT_EQ(a.size(), b.size());
      size_t diff = 0;
      for (size_t i = 0; i < a.size(); ++i) diff += a[i] != b[i];
      EXPECT_EQ(diff, 0u) << "paged and contiguous layouts differ in " << diff << " elements";
    }
  }
}

// Hints above the real values (as under a captured CUDA graph): same results, padding rows of
// out untouched.
TEST(CudaAttention, LooseHintsLeavePaddingUntouched) {
  SKIP_WITHOUT_GPU();
  Config c;
  c.seqs = kMixed;
  const Problem p = make_problem(c, 31);
  const std::vector<double> want = reference(p, 1.0f / std::sqrt(128.0f));
  for (AttentionPath path : {AttentionPath::kAuto, AttentionPath::kPrefill, AttentionPath::kReference}) {
    DeviceProblem d = upload_problem(p, true, /*pad=*/77);
    d.launch.path = path;
    ASSERT_TRUE(launch_attention(d.launch, nullptr).is_ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    expect_close(download_out(d, p), want, c, "loose hints");
    std::vector<uint16_t> pad(static_cast<size_t>(77) * c.hq * c.d);
    ASSERT_EQ(cudaMemcpy(pad.data(), d.out.as<uint16_t>() + static_cast<size_t>(p.num_tokens) * c.hq * c.d,
                         pad.size() * 2, cudaMemcpyDeviceToHost),
              cudaSuccess);
    EXPECT_TRUE(std::all_of(pad.begin(), pad.end(), [](uint16_t v) { return v == 0xffff; }));
  }
}

// Capture one decode step in a CUDA graph with loose hints, then replay it after the device
// metadata and data change (longer contexts, new q): each replay matches its own reference.
// Both split-KV kernels (v2, v3) and two group sizes.
void graph_replay_case(int hq, int hkv, int decode_version) {
  Config c;
  c.hq = hq;
  c.hkv = hkv;
  c.seqs = {{1, 100}, {1, 700}, {1, 5}};
  const std::string tag = "v" + std::to_string(decode_version) + " Hq=" + std::to_string(hq) + " Hkv=" +
                          std::to_string(hkv) + " graph step ";
  Problem p = make_problem(c, 41);
  // Room to grow: hints of 4096 keys and a table wide enough for them.
  const int hint_ctx = 4096;
  Config big = c;
  big.seqs = {{1, hint_ctx}, {1, hint_ctx}, {1, hint_ctx}};
  const Problem room = make_problem(big, 42);
  DeviceProblem d = upload_problem(room, true);
  d.launch.decode_version = decode_version;
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  const Status st = launch_attention(d.launch, stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int step = 0; step < 3; ++step) {
    // Contexts grow; the block tables of `room` stay (they cover hint_ctx keys).
    Problem cur = room;
    cur.cfg = c;
    for (size_t s = 0; s < c.seqs.size(); ++s) {
      cur.cfg.seqs[s].ctx = std::min(hint_ctx, c.seqs[s].ctx + step * 1500);
      cur.context_lens[s] = cur.cfg.seqs[s].ctx;
    }
    std::mt19937 rng(50 + step);
    fill_random(c.dtype, cur.q_bits.size(), 3.0f, rng, cur.q_bits, cur.q);
    ASSERT_EQ(cudaMemcpy(d.q.get(), cur.q_bits.data(), cur.q_bits.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(d.context_lens.get(), cur.context_lens.data(), cur.context_lens.size() * 4,
                         cudaMemcpyHostToDevice),
              cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    expect_close(download_out(d, cur), reference(cur, d.launch.scale), c, tag + std::to_string(step));
    expect_counters_zero(d, tag + std::to_string(step));
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(CudaAttention, GraphReplayFollowsDeviceLengths) {
  SKIP_WITHOUT_GPU();
  for (int version : {2, 3}) {
    graph_replay_case(32, 8, version);
    graph_replay_case(16, 2, version);
  }
}

// One zeroed workspace serves many launches: the counters that the last CTAs reset let the next
// launch merge correctly, whether a row needs one split (written directly) or many, and when the
// split count and the contexts change between launches.
TEST(CudaAttention, FusedMergeReusesWorkspace) {
  SKIP_WITHOUT_GPU();
  Config c;
  c.hq = 32;
  c.hkv = 8;
  // Short rows (one live split at any split count: direct write) beside long ones (merged).
  c.seqs = {{1, 1}, {1, 40}, {1, 64}, {1, 65}, {1, 130}, {1, 384}, {1, 1000}, {1, 2}};
  const Problem p = make_problem(c, 81);
  DeviceProblem d = upload_problem(p, true);
  for (int round = 0; round < 2; ++round) {
    for (int splits : {16, 2, 5, 1, 128, 0}) {
      Problem cur = p;
      std::mt19937 rng(90 + splits + 7 * round);
      fill_random(c.dtype, cur.q_bits.size(), 3.0f, rng, cur.q_bits, cur.q);
      ASSERT_EQ(cudaMemcpy(d.q.get(), cur.q_bits.data(), cur.q_bits.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
      d.launch.decode_splits = splits;
      const Status st = launch_attention(d.launch, nullptr);
      ASSERT_TRUE(st.is_ok()) << st.to_string();
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const std::string what = "splits " + std::to_string(splits) + " round " + std::to_string(round);
      expect_close(download_out(d, cur), reference(cur, d.launch.scale), c, what);
      expect_counters_zero(d, what);
    }
  }
}

// A prefill-only step whose caller rules out decode rows (max_decode_seqs = 0) runs the prefill
// kernel alone and gives the same output; max_decode_seqs = 0 is ignored for decode-only steps.
TEST(CudaAttention, PrefillOnlyStepSkipsDecodeLaunch) {
  SKIP_WITHOUT_GPU();
  Config c;
  c.seqs = {{17, 17}, {97, 1000}, {5, 40}};
  const Problem p = make_problem(c, 91);
  const std::vector<double> want = reference(p, 1.0f / std::sqrt(128.0f));
  expect_close(run_path(p, AttentionPath::kAuto, {.max_decode_seqs = 0}), want, c, "prefill-only, hint 0");
  expect_close(run_path(p, AttentionPath::kAuto, {.max_decode_seqs = 3}), want, c, "prefill-only, hint 3");
  Config dc;
  dc.seqs = {{1, 300}, {1, 7}};
  const Problem dp = make_problem(dc, 92);
  expect_close(run_path(dp, AttentionPath::kAuto, {.max_decode_seqs = 0}), reference(dp, 1.0f / std::sqrt(128.0f)),
               dc, "decode-only, hint 0");
}

// The CUDA kernels and CpuBackend::attention agree on the same (dtype-rounded) inputs.
TEST(CudaAttention, MatchesCpuBackend) {
  SKIP_WITHOUT_GPU();
  Config c;
  c.hq = 8;
  c.hkv = 2;
  c.d = 64;
  c.block_size = 32;
  c.seqs = kMixed;
  Problem p = make_problem(c, 61);
  std::vector<float> cpu_out(p.q.size(), 0.f);
  BatchView b;
  b.num_tokens = p.num_tokens;
  b.num_seqs = static_cast<int32_t>(c.seqs.size());
  b.max_query_len = p.max_q;
  b.max_context_len = p.max_ctx;
  b.max_blocks_per_seq = p.max_blocks_per_seq;
  b.seq_starts = p.seq_starts.data();
  b.context_lens = p.context_lens.data();
  b.block_tables = p.block_tables.data();
  KvCacheLayer kv;
  kv.k = p.k.data();
  kv.v = p.v.data();
  kv.dtype = DType::kF32;
  kv.num_blocks = p.num_blocks;
  kv.block_size = c.block_size;
  kv.num_kv_heads = c.hkv;
  kv.head_dim = c.d;
  CpuBackend cpu;
  const Shape shape{p.num_tokens, c.hq, c.d};
  const float scale = 1.0f / std::sqrt(64.0f);
  const Status st = cpu.attention(Tensor(p.q.data(), DType::kF32, shape), kv, b, scale,
                                  Tensor(cpu_out.data(), DType::kF32, shape));
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  const std::vector<double> cpu_ref(cpu_out.begin(), cpu_out.end());
  expect_close(run_path(p, AttentionPath::kAuto), cpu_ref, c, "auto vs CpuBackend");
  expect_close(run_path(p, AttentionPath::kPrefill), cpu_ref, c, "prefill vs CpuBackend");
}

TEST(CudaAttention, RejectsBadArguments) {
  SKIP_WITHOUT_GPU();
  Config c;
  c.seqs = {{1, 10}};
  const Problem p = make_problem(c, 71);
  DeviceProblem d = upload_problem(p, true);
  auto code = [&](auto edit) {
    AttentionLaunch l = d.launch;
    edit(l);
    return launch_attention(l, nullptr).code();
  };
  EXPECT_EQ(code([](AttentionLaunch&) {}), StatusCode::kOk);
  EXPECT_EQ(code([](AttentionLaunch& l) { l.head_dim = 96; }), StatusCode::kUnsupported);
  EXPECT_EQ(code([](AttentionLaunch& l) { l.dtype = DType::kF32; }), StatusCode::kUnsupported);
  EXPECT_EQ(code([](AttentionLaunch& l) { l.block_size = 24; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](AttentionLaunch& l) { l.num_kv_heads = 3; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](AttentionLaunch& l) { l.batch.block_tables = nullptr; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](AttentionLaunch& l) { l.prefill_warp_rows = 8; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](AttentionLaunch& l) { l.decode_version = 4; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](AttentionLaunch& l) { l.decode_version = 2; }), StatusCode::kOk);
  EXPECT_EQ(code([](AttentionLaunch& l) { l.decode_version = 3; }), StatusCode::kOk);
  EXPECT_EQ(code([](AttentionLaunch& l) {  // v3 serves at most 16 query heads per KV head
              l.num_heads = 32;
              l.num_kv_heads = 1;
              l.decode_version = 3;
            }),
            StatusCode::kUnsupported);
  EXPECT_EQ(code([](AttentionLaunch& l) { l.max_decode_seqs = -2; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](AttentionLaunch& l) {
              l.path = AttentionPath::kDecode;
              l.batch.max_query_len = 4;
            }),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace anvil::cuda
