// CUDA backend ops against the CPU reference on random inputs with odd shapes, bf16 and f16.
// Inputs are rounded to the compute dtype first; the CPU gets the rounded values in f32.
// Tolerances (relative norm error): bf16 8e-3 and f16 1.5e-3 for elementwise ops (two roundings
// to the output dtype), GEMM 1e-2 bf16 / 3e-3 f16 out, 1e-4 with f32 out; gathers are exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "cuda_test_util.h"

namespace anvil::test {
namespace {

constexpr DType kDtypes[] = {DType::kBF16, DType::kF16};
double elem_tol(DType d) { return d == DType::kBF16 ? 8e-3 : 1.5e-3; }

TEST(CudaOps, BackendBasics) {
  ANVIL_REQUIRE_GPU();
  auto gpu = make_gpu(DType::kBF16);
  ASSERT_TRUE(gpu);
  EXPECT_NE(gpu->name().find("sm_"), std::string::npos) << gpu->name();
  auto mem = gpu->memory_info();
  ASSERT_TRUE(mem.is_ok());
  EXPECT_GT(mem->total_bytes, mem->free_bytes / 2);
  // Cached reuse: a freed block comes back for the same size.
  auto a = gpu->allocate(1000);
  ASSERT_TRUE(a.is_ok());
  void* p = *a;
  gpu->deallocate(p);
  auto b = gpu->allocate(1000);
  ASSERT_TRUE(b.is_ok());
  EXPECT_EQ(*b, p);
  gpu->deallocate(*b);
  BackendOptions bad;
  bad.kind = BackendKind::kCuda;
  bad.compute_dtype = DType::kF32;
  EXPECT_FALSE(create_cuda_backend(bad).is_ok());
}

TEST(CudaOps, EmbeddingAndGatherRows) {
  ANVIL_REQUIRE_GPU();
  for (DType dt : kDtypes) {
    auto gpu = make_gpu(dt);
    ASSERT_TRUE(gpu);
    const int64_t v = 1000, h = 896, t = 17;
    auto table = random_floats(v * h, 1);
    auto bits = round_to(dt, table);
    std::vector<int32_t> ids(t);
    for (int64_t i = 0; i < t; ++i) ids[i] = static_cast<int32_t>((i * 397 + 11) % v);
    ids[3] = -5;  // out of range: a zero row on the GPU
    auto d_table = DevBuf::of(gpu.get(), bits);
    auto d_ids = DevBuf::of(gpu.get(), ids);
    auto d_out = DevBuf::poison(gpu.get(), t * h * 2);
    ASSERT_TRUE(gpu->embedding(d_ids.t(DType::kI32, {t}), d_table.t(dt, {v, h}), d_out.t(dt, {t, h})).is_ok());
    auto out = d_out.read<uint16_t>(t * h);
    for (int64_t i = 0; i < t; ++i) {
      for (int64_t j = 0; j < h; ++j) {
        const uint16_t want = ids[i] < 0 ? 0 : bits[ids[i] * h + j];
        ASSERT_EQ(out[i * h + j], want) << "row " << i << " col " << j;
      }
    }
    // gather_rows on f32 rows of an odd width (4-byte units) and on 16-bit rows.
    const int64_t rows = 97, w = 33;
    auto x = random_floats(rows * w, 2);
    std::vector<int32_t> sel = {96, 0, 5, 5, 50};
    auto d_x = DevBuf::of(gpu.get(), x);
    auto d_sel = DevBuf::of(gpu.get(), sel);
    auto d_g = DevBuf::poison(gpu.get(), sel.size() * w * 4);
    const int64_t n = static_cast<int64_t>(sel.size());
    ASSERT_TRUE(gpu->gather_rows(d_x.t(DType::kF32, {rows, w}), d_sel.t(DType::kI32, {n}), d_g.t(DType::kF32, {n, w}))
                    .is_ok());
    auto g = d_g.read<float>(n * w);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < w; ++j) ASSERT_EQ(g[i * w + j], x[sel[i] * w + j]);
    auto d_g16 = DevBuf::poison(gpu.get(), n * h * 2);
    ASSERT_TRUE(gpu->gather_rows(d_table.t(dt, {v, h}), d_sel.t(DType::kI32, {n}), d_g16.t(dt, {n, h})).is_ok());
    auto g16 = d_g16.read<uint16_t>(n * h);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < h; ++j) ASSERT_EQ(g16[i * h + j], bits[sel[i] * h + j]);
  }
}

TEST(CudaOps, RmsNormMatchesCpu) {
  ANVIL_REQUIRE_GPU();
  CpuBackend cpu;
  for (DType dt : kDtypes) {
    auto gpu = make_gpu(dt);
    ASSERT_TRUE(gpu);
    for (int64_t h : {64, 896, 4096, 97, 17, 16384}) {
      for (int64_t t : {1, 17, 97}) {
        for (int mode = 0; mode < 3; ++mode) {  // 0: plain, 1: residual, 2: out aliases x
          SCOPED_TRACE(std::string(name_of(dt)) + " H=" + std::to_string(h) + " T=" + std::to_string(t) +
                       " mode=" + std::to_string(mode));
          auto x = random_floats(t * h, 10 + h + t, -2.0f, 2.0f);
          auto res = random_floats(t * h, 20 + h + t, -2.0f, 2.0f);
          auto w = random_floats(h, 30 + h, 0.5f, 1.5f);
          auto xb = round_to(dt, x);
          auto rb = round_to(dt, res);
          auto wb = round_to(dt, w);
          auto d_x = DevBuf::of(gpu.get(), xb);
          auto d_r = DevBuf::of(gpu.get(), rb);
          auto d_w = DevBuf::of(gpu.get(), wb);
          auto d_o = DevBuf::poison(gpu.get(), t * h * 2);
          Tensor gx = d_x.t(dt, {t, h});
          Tensor go = mode == 2 ? gx : d_o.t(dt, {t, h});
          Tensor gr = mode == 1 ? d_r.t(dt, {t, h}) : Tensor();
          ASSERT_TRUE(gpu->rms_norm(gx, gr, d_w.t(dt, {h}), 1e-6f, go).is_ok());
          std::vector<float> ref(t * h);
          Tensor cr = mode == 1 ? host_tensor(res, {t, h}) : Tensor();
          ASSERT_TRUE(cpu.rms_norm(host_tensor(x, {t, h}), cr, host_tensor(w, {h}), 1e-6f, host_tensor(ref, {t, h})).is_ok());
          auto out = to_f32(dt, (mode == 2 ? d_x : d_o).read<uint16_t>(t * h));
          EXPECT_LT(rel_err(out, ref), elem_tol(dt));
          if (mode == 1) {
            auto r_out = to_f32(dt, d_r.read<uint16_t>(t * h));
            EXPECT_LT(rel_err(r_out, res), dt == DType::kBF16 ? 4e-3 : 5e-4);
          }
        }
      }
    }
  }
}

TEST(CudaOps, ActMulMatchesCpu) {
  ANVIL_REQUIRE_GPU();
  CpuBackend cpu;
  for (DType dt : kDtypes) {
    auto gpu = make_gpu(dt);
    ASSERT_TRUE(gpu);
    for (Activation act : {Activation::kSilu, Activation::kGeluTanh}) {
      for (int64_t f : {17, 64, 896, 1000}) {
        for (int64_t t : {1, 17, 97}) {
          SCOPED_TRACE(std::string(name_of(dt)) + " F=" + std::to_string(f) + " T=" + std::to_string(t));
          auto gu = random_floats(t * 2 * f, 40 + f + t, -4.0f, 4.0f);
          auto gub = round_to(dt, gu);
          auto d_gu = DevBuf::of(gpu.get(), gub);
          auto d_o = DevBuf::poison(gpu.get(), t * f * 2);
          ASSERT_TRUE(gpu->act_mul(d_gu.t(dt, {t, 2 * f}), act, d_o.t(dt, {t, f})).is_ok());
          std::vector<float> ref(t * f);
          ASSERT_TRUE(cpu.act_mul(host_tensor(gu, {t, 2 * f}), act, host_tensor(ref, {t, f})).is_ok());
          EXPECT_LT(rel_err(to_f32(dt, d_o.read<uint16_t>(t * f)), ref), elem_tol(dt));
        }
      }
    }
  }
}

TEST(CudaOps, LinearMatchesCpu) {
  ANVIL_REQUIRE_GPU();
  CpuBackend cpu;
  struct Case {
    int64_t m, n, k;
    bool bias;
    bool f32_out;
  };
  const Case cases[] = {{1, 64, 64, false, false},   {17, 97, 896, true, false},  {97, 4096, 64, false, true},
                        {1, 1000, 4096, true, true}, {33, 896, 4096, false, false}, {2, 17, 8, true, false}};
  for (DType dt : kDtypes) {
    auto gpu = make_gpu(dt);
    ASSERT_TRUE(gpu);
    for (const Case& c : cases) {
      SCOPED_TRACE(std::string(name_of(dt)) + " M=" + std::to_string(c.m) + " N=" + std::to_string(c.n) +
                   " K=" + std::to_string(c.k) + (c.bias ? " bias" : "") + (c.f32_out ? " f32out" : ""));
      auto x = random_floats(c.m * c.k, 50 + c.m, -1.0f, 1.0f);
      auto w = random_floats(c.n * c.k, 60 + c.n, -0.1f, 0.1f);
      auto b = random_floats(c.n, 70, -1.0f, 1.0f);
      auto xb = round_to(dt, x);
      auto wb = round_to(dt, w);
      auto bb = round_to(dt, b);
      auto d_x = DevBuf::of(gpu.get(), xb);
      auto d_w = DevBuf::of(gpu.get(), wb);
      auto d_b = DevBuf::of(gpu.get(), bb);
      const DType odt = c.f32_out ? DType::kF32 : dt;
      auto d_o = DevBuf::poison(gpu.get(), c.m * c.n * dtype_size(odt));
      ASSERT_TRUE(gpu->linear(d_x.t(dt, {c.m, c.k}), d_w.t(dt, {c.n, c.k}), c.bias ? d_b.t(dt, {c.n}) : Tensor(),
                              d_o.t(odt, {c.m, c.n}))
                      .is_ok());
      std::vector<float> ref(c.m * c.n);
      ASSERT_TRUE(cpu.linear(host_tensor(x, {c.m, c.k}), host_tensor(w, {c.n, c.k}),
                             c.bias ? host_tensor(b, {c.n}) : Tensor(), host_tensor(ref, {c.m, c.n}))
                      .is_ok());
      std::vector<float> out = c.f32_out ? d_o.read<float>(c.m * c.n) : to_f32(dt, d_o.read<uint16_t>(c.m * c.n));
      const double tol = c.f32_out ? 1e-4 : (dt == DType::kBF16 ? 1e-2 : 3e-3);
      EXPECT_LT(rel_err(out, ref), tol);
    }
  }
  // Mismatched shapes are an error, not a crash.
  auto gpu = make_gpu(DType::kBF16);
  ASSERT_TRUE(gpu);
  auto d = DevBuf::poison(gpu.get(), 4096);
  EXPECT_FALSE(gpu->linear(d.t(DType::kBF16, {2, 8}), d.t(DType::kBF16, {4, 9}), Tensor(), d.t(DType::kBF16, {2, 4})).is_ok());
}

TEST(CudaOps, LinearAutotunePinsAWorkingAlgorithm) {
  ANVIL_REQUIRE_GPU();
  auto gpu = make_gpu(DType::kBF16);
  ASSERT_TRUE(gpu);
  auto* cb = static_cast<CudaBackend*>(gpu.get());
  auto r = cb->autotune_linear(8, 512, 256, DType::kBF16, false, 4, 3);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_GE(r->candidates_timed, 1);
  EXPECT_GT(r->best_us, 0.0f);
  EXPECT_LE(r->best_us, r->heuristic_us * 1.0001f + 1e-3f);
  // M = 7 falls in the same bucket and must still compute the right product.
  CpuBackend cpu;
  const int64_t m = 7, n = 512, k = 256;
  auto x = random_floats(m * k, 80);
  auto w = random_floats(n * k, 81, -0.1f, 0.1f);
  auto xb = round_to(DType::kBF16, x);
  auto wb = round_to(DType::kBF16, w);
  auto d_x = DevBuf::of(gpu.get(), xb);
  auto d_w = DevBuf::of(gpu.get(), wb);
  auto d_o = DevBuf::poison(gpu.get(), m * n * 4);
  ASSERT_TRUE(gpu->linear(d_x.t(DType::kBF16, {m, k}), d_w.t(DType::kBF16, {n, k}), Tensor(), d_o.t(DType::kF32, {m, n})).is_ok());
  std::vector<float> ref(m * n);
  ASSERT_TRUE(cpu.linear(host_tensor(x, {m, k}), host_tensor(w, {n, k}), Tensor(), host_tensor(ref, {m, n})).is_ok());
  EXPECT_LT(rel_err(d_o.read<float>(m * n), ref), 1e-4);
}

TEST(CudaOps, RopeKvWriteMatchesCpu) {
  ANVIL_REQUIRE_GPU();
  CpuBackend cpu;
  struct Case {
    int hq, hkv, d;
    bool qk_norm;
    float scaling;
  };
  const Case cases[] = {{8, 2, 128, false, 1.0f}, {14, 2, 64, true, 1.0f}, {4, 4, 256, true, 0.9f}, {5, 1, 96, false, 1.2f}};
  for (DType dt : kDtypes) {
    auto gpu = make_gpu(dt);
    ASSERT_TRUE(gpu);
    for (const Case& c : cases) {
      SCOPED_TRACE(std::string(name_of(dt)) + " Hq=" + std::to_string(c.hq) + " Hkv=" + std::to_string(c.hkv) +
                   " D=" + std::to_string(c.d) + (c.qk_norm ? " qk_norm" : ""));
      const int t = 17, block_size = 16, num_blocks = 6;
      const int64_t row = static_cast<int64_t>(c.hq + 2 * c.hkv) * c.d;
      auto qkv = random_floats(t * row, 90 + c.d, -2.0f, 2.0f);
      auto qn = random_floats(c.d, 91, 0.5f, 1.5f);
      auto kn = random_floats(c.d, 92, 0.5f, 1.5f);
      auto qkvb = round_to(dt, qkv);
      auto qnb = round_to(dt, qn);
      auto knb = round_to(dt, kn);
      std::vector<float> inv_freq(c.d / 2);
      for (int i = 0; i < c.d / 2; ++i) inv_freq[i] = std::pow(500000.0f, -2.0f * i / c.d);
      std::vector<int32_t> pos(t), slots(t);
      for (int i = 0; i < t; ++i) {
        pos[i] = (i * 7919 + 3) % 30000;
        slots[i] = (i * 37 + 5) % (num_blocks * block_size);
      }
      slots[4] = -1;  // padding token: no cache write
      const size_t cache_elems = static_cast<size_t>(num_blocks) * c.hkv * block_size * c.d;
      // CPU side.
      std::vector<float> ck(cache_elems, 0.0f), cv(cache_elems, 0.0f), cq(static_cast<size_t>(t) * c.hq * c.d);
      BatchView hb;
      hb.num_tokens = t;
      hb.positions = pos.data();
      hb.slot_map = slots.data();
      KvCacheLayer hkv{ck.data(), cv.data(), DType::kF32, num_blocks, block_size, c.hkv, c.d};
      ASSERT_TRUE(cpu.rope_kv_write(host_tensor(qkv, {t, row}), c.qk_norm ? host_tensor(qn, {c.d}) : Tensor(),
                                    c.qk_norm ? host_tensor(kn, {c.d}) : Tensor(), 1e-6f,
                                    host_tensor(inv_freq, {c.d / 2}), c.scaling, hb, host_tensor(cq, {t, c.hq, c.d}), hkv)
                      .is_ok());
      // GPU side; caches start zeroed like the CPU ones so untouched slots compare equal.
      auto d_qkv = DevBuf::of(gpu.get(), qkvb);
      auto d_qn = DevBuf::of(gpu.get(), qnb);
      auto d_kn = DevBuf::of(gpu.get(), knb);
      auto d_f = DevBuf::of(gpu.get(), inv_freq);
      auto d_pos = DevBuf::of(gpu.get(), pos);
      auto d_slot = DevBuf::of(gpu.get(), slots);
      auto d_q = DevBuf::poison(gpu.get(), cq.size() * 2);
      auto d_k = DevBuf::of(gpu.get(), std::vector<uint16_t>(cache_elems, 0));
      auto d_v = DevBuf::of(gpu.get(), std::vector<uint16_t>(cache_elems, 0));
      BatchView db = hb;
      db.positions = static_cast<const int32_t*>(d_pos.buf.get());
      db.slot_map = static_cast<const int32_t*>(d_slot.buf.get());
      KvCacheLayer dkv{d_k.buf.get(), d_v.buf.get(), dt, num_blocks, block_size, c.hkv, c.d};
      ASSERT_TRUE(gpu->rope_kv_write(d_qkv.t(dt, {t, row}), c.qk_norm ? d_qn.t(dt, {c.d}) : Tensor(),
                                     c.qk_norm ? d_kn.t(dt, {c.d}) : Tensor(), 1e-6f, d_f.t(DType::kF32, {c.d / 2}),
                                     c.scaling, db, d_q.t(dt, {t, c.hq, c.d}), dkv)
                      .is_ok());
      EXPECT_LT(rel_err(to_f32(dt, d_q.read<uint16_t>(cq.size())), cq), elem_tol(dt));
      EXPECT_LT(rel_err(to_f32(dt, d_k.read<uint16_t>(cache_elems)), ck), elem_tol(dt));
      // V is copied, so it is exact.
      EXPECT_EQ(rel_err(to_f32(dt, d_v.read<uint16_t>(cache_elems)), cv), 0.0);
    }
  }
}

}  // namespace
}  // namespace anvil::test
