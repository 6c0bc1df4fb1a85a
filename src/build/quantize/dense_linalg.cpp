// Dense host kernels for GPTQ (see dense_linalg.h). The GEMM is a register-tiled micro-kernel
// (6 rows x 2 vectors of accumulators, B panel reused from L1 across rows) compiled twice, for
// x86-64-v3 (AVX2+FMA) and for the baseline ISA, picked at load time (GCC target_clones).
#include "build/quantize/dense_linalg.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/thread_pool.h"

namespace anvil::quant_detail {
namespace {

#define ANVIL_ALWAYS_INLINE inline __attribute__((always_inline))
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ANVIL_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ANVIL_MULTIVERSION
#endif

constexpr int64_t kRowTile = 48;   // rows of C per parallel task (a multiple of MR = 6)
constexpr int64_t kColTile = 256;  // columns of C per parallel task

// 32-byte vectors (GCC vector extensions): one AVX register in the x86-64-v3 clone, a pair of
// SSE registers in the baseline one. may_alias + aligned(sizeof(T)): loads from any position.
template <typename T>
struct Vec32 {
  typedef T type __attribute__((vector_size(32), aligned(sizeof(T)), __may_alias__));
  static constexpr int kLanes = 32 / sizeof(T);
};

// C[MR, NR] -= A[MR, p] B[p, NR] with NR two vectors wide: 2 * MR vector accumulators stay in
// registers over the p loop. b is a packed panel, NR apart per row.
template <typename T, int MR>
ANVIL_ALWAYS_INLINE void micro_kernel(T* c, int64_t ldc, const T* a, int64_t lda, const T* b, int64_t p) {
  using V = typename Vec32<T>::type;
  constexpr int L = Vec32<T>::kLanes;
  V acc[MR][2] = {};
  for (int64_t q = 0; q < p; ++q) {
    const V b0 = *reinterpret_cast<const V*>(b + q * 2 * L);
    const V b1 = *reinterpret_cast<const V*>(b + q * 2 * L + L);
    for (int r = 0; r < MR; ++r) {
      const T av = a[r * lda + q];
      acc[r][0] += av * b0;
      acc[r][1] += av * b1;
    }
  }
  for (int r = 0; r < MR; ++r) {
    *reinterpret_cast<V*>(c + r * ldc) -= acc[r][0];
    *reinterpret_cast<V*>(c + r * ldc + L) -= acc[r][1];
  }
}

// Edge tiles (fewer than MR rows or NR columns): plain loops.
template <typename T>
ANVIL_ALWAYS_INLINE void edge_kernel(T* c, int64_t ldc, const T* a, int64_t lda, const T* b, int64_t ldb, int64_t rows,
                                     int64_t cols, int64_t p) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t q = 0; q < p; ++q) {
      const T av = a[r * lda + q];
      const T* bq = b + q * ldb;
      for (int64_t j = 0; j < cols; ++j) c[r * ldc + j] -= av * bq[j];
    }
  }
}

// C[i0:i1, j0:j1] -= A[i0:i1, :] B[:, j0:j1]. Each NR-column strip of B is first copied into a
// contiguous [p, NR] panel: read in place, its rows ldb apart would alias into a few L1 sets.
template <typename T, int MR>
ANVIL_ALWAYS_INLINE void gemm_tile(T* c, int64_t ldc, const T* a, int64_t lda, const T* b, int64_t ldb, int64_t i0,
                                   int64_t i1, int64_t j0, int64_t j1, int64_t p) {
  constexpr int64_t NR = 2 * Vec32<T>::kLanes;
  thread_local std::vector<T> panel;
  if (static_cast<int64_t>(panel.size()) < p * NR) panel.resize(static_cast<size_t>(p * NR));
  int64_t j = j0;
  for (; j + NR <= j1; j += NR) {
    for (int64_t q = 0; q < p; ++q)
      for (int64_t x = 0; x < NR; ++x) panel[static_cast<size_t>(q * NR + x)] = b[q * ldb + j + x];
    int64_t i = i0;
    for (; i + MR <= i1; i += MR) micro_kernel<T, MR>(c + i * ldc + j, ldc, a + i * lda, lda, panel.data(), p);
    if (i < i1) edge_kernel<T>(c + i * ldc + j, ldc, a + i * lda, lda, panel.data(), NR, i1 - i, NR, p);
  }
  if (j < j1) edge_kernel<T>(c + i0 * ldc + j, ldc, a + i0 * lda, lda, b + j, ldb, i1 - i0, j1 - j, p);
}

ANVIL_MULTIVERSION void gemm_tile_f32(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb,
                                      int64_t i0, int64_t i1, int64_t j0, int64_t j1, int64_t p) {
  gemm_tile<float, 6>(c, ldc, a, lda, b, ldb, i0, i1, j0, j1, p);
}

ANVIL_MULTIVERSION void gemm_tile_f64(double* c, int64_t ldc, const double* a, int64_t lda, const double* b,
                                      int64_t ldb, int64_t i0, int64_t i1, int64_t j0, int64_t j1, int64_t p) {
  gemm_tile<double, 6>(c, ldc, a, lda, b, ldb, i0, i1, j0, j1, p);
}

// Splits C into kRowTile x kColTile tiles and deals them round-robin to the pool's threads, so a
// triangular (lower_only) update stays balanced.
template <typename T, typename TileFn>
void gemm_parallel(T* c, int64_t ldc, const T* a, int64_t lda, const T* b, int64_t ldb, int64_t m, int64_t n,
                   int64_t p, bool lower_only, TileFn tile_fn) {
  if (m <= 0 || n <= 0 || p <= 0) return;
  const int64_t row_tiles = (m + kRowTile - 1) / kRowTile, col_tiles = (n + kColTile - 1) / kColTile;
  const int64_t tiles = row_tiles * col_tiles;
  auto run = [&](int64_t t) {
    const int64_t i0 = (t / col_tiles) * kRowTile, j0 = (t % col_tiles) * kColTile;
    const int64_t i1 = std::min(m, i0 + kRowTile), j1 = std::min(n, j0 + kColTile);
    if (lower_only && j0 >= i1) return;
    tile_fn(c, ldc, a, lda, b, ldb, i0, i1, j0, j1, p);
  };
  ThreadPool& pool = ThreadPool::global();
  const int64_t lanes = std::min<int64_t>(tiles, pool.num_threads());
  if (lanes <= 1 || m * n * p < (int64_t{1} << 18)) {
    for (int64_t t = 0; t < tiles; ++t) run(t);
    return;
  }
  pool.parallel_for(lanes, [&](int64_t l0, int64_t l1) {
    for (int64_t l = l0; l < l1; ++l)
      for (int64_t t = l; t < tiles; t += lanes) run(t);
  });
}

}  // namespace

void gemm_sub(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m, int64_t n,
              int64_t p) {
  gemm_parallel(c, ldc, a, lda, b, ldb, m, n, p, false, gemm_tile_f32);
}

void gemm_sub(double* c, int64_t ldc, const double* a, int64_t lda, const double* b, int64_t ldb, int64_t m,
              int64_t n, int64_t p, bool lower_only) {
  gemm_parallel(c, ldc, a, lda, b, ldb, m, n, p, lower_only, gemm_tile_f64);
}

// Right-looking blocked Cholesky: factor a diagonal block, solve the panel below it against the
// block, then subtract the panel's outer product from the trailing lower triangle.
Status cholesky_lower(double* a, int64_t k) {
  constexpr int64_t kBlock = 128;
  std::vector<double> panel_t;  // [jb, rows below the block], the panel transposed for gemm_sub
  for (int64_t j0 = 0; j0 < k; j0 += kBlock) {
    const int64_t j1 = std::min(k, j0 + kBlock), jb = j1 - j0;
    for (int64_t j = j0; j < j1; ++j) {
      double d = a[j * k + j];
      for (int64_t q = j0; q < j; ++q) d -= a[j * k + q] * a[j * k + q];
      if (!(d > 0.0) || !std::isfinite(d)) {
        return invalid_argument("Cholesky: pivot " + std::to_string(j) + " is " + std::to_string(d) +
                                " (the matrix is not positive definite)");
      }
      const double l = std::sqrt(d);
      a[j * k + j] = l;
      for (int64_t i = j + 1; i < j1; ++i) {
        double s = a[i * k + j];
        for (int64_t q = j0; q < j; ++q) s -= a[i * k + q] * a[j * k + q];
        a[i * k + j] = s / l;
      }
    }
    const int64_t rows = k - j1;
    if (rows == 0) break;
    ThreadPool::global().parallel_for(rows, [&](int64_t r0, int64_t r1) {
      for (int64_t i = j1 + r0; i < j1 + r1; ++i) {
        for (int64_t j = j0; j < j1; ++j) {
          double s = a[i * k + j];
          for (int64_t q = j0; q < j; ++q) s -= a[i * k + q] * a[j * k + q];
          a[i * k + j] = s / a[j * k + j];
        }
      }
    });
    panel_t.assign(static_cast<size_t>(jb * rows), 0.0);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < jb; ++j) panel_t[static_cast<size_t>(j * rows + i)] = a[(j1 + i) * k + j0 + j];
    gemm_sub(a + j1 * k + j1, k, a + j1 * k + j0, k, panel_t.data(), rows, rows, rows, jb, /*lower_only=*/true);
  }
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = i + 1; j < k; ++j) a[i * k + j] = 0.0;
  return Status::ok();
}

// Blocked by rows: with X = L^-1 known above row block I, X[I, :I] = -L[I,I]^-1 L[I, :I] X[:I, :I]
// and X[I, I] = L[I,I]^-1. Row block I reads only its own rows of L, so the result overwrites L.
void invert_lower_triangular(double* l, int64_t k) {
  constexpr int64_t kBlock = 128;
  std::vector<double> diag_inv, prod;
  for (int64_t i0 = 0; i0 < k; i0 += kBlock) {
    const int64_t i1 = std::min(k, i0 + kBlock), b = i1 - i0;
    // Negated inverse of the diagonal block, unblocked.
    diag_inv.assign(static_cast<size_t>(b * b), 0.0);
    for (int64_t i = 0; i < b; ++i) {
      const double inv_d = 1.0 / l[(i0 + i) * k + i0 + i];
      diag_inv[static_cast<size_t>(i * b + i)] = inv_d;
      for (int64_t j = 0; j < i; ++j) {
        double s = 0.0;
        for (int64_t q = j; q < i; ++q) s += l[(i0 + i) * k + i0 + q] * diag_inv[static_cast<size_t>(q * b + j)];
        diag_inv[static_cast<size_t>(i * b + j)] = -s * inv_d;
      }
    }
    if (i0 > 0) {
      prod.assign(static_cast<size_t>(b * i0), 0.0);
      // prod = -L[I, :I] X[:I, :I]; X is lower triangular, so columns [j, j + w) need rows >= j only.
      constexpr int64_t kStrip = 256;
      for (int64_t j = 0; j < i0; j += kStrip) {
        const int64_t w = std::min(kStrip, i0 - j);
        gemm_sub(prod.data() + j, i0, l + i0 * k + j, k, l + j * k + j, k, b, w, i0 - j);
      }
      for (int64_t i = 0; i < b; ++i)
        for (int64_t j = 0; j < i0; ++j) l[(i0 + i) * k + j] = 0.0;
      // X[I, :I] = 0 - (-D^-1) prod
      for (double& v : diag_inv) v = -v;
      gemm_sub(l + i0 * k, k, diag_inv.data(), b, prod.data(), i0, b, i0, b);
      for (double& v : diag_inv) v = -v;
    }
    for (int64_t i = 0; i < b; ++i)
      for (int64_t j = 0; j < b; ++j) l[(i0 + i) * k + i0 + j] = diag_inv[static_cast<size_t>(i * b + j)];
  }
}

}  // namespace anvil::quant_detail
