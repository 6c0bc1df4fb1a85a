// Micro-benchmarks of the CUDA ops (run with ANVIL_CUDA_BENCH=1; skipped otherwise): measured
// copy bandwidth as the memory ceiling, GEMMs at llama-3-8B decode (M=1) and prefill (M=2048)
// shapes, rms_norm / rope_kv_write / act_mul at T=2048, and sampling over V=128256. Prints a
// markdown table (also to $ANVIL_BENCH_OUT if set). Timing: CUDA events around batches of
// launches on the backend stream, median of batches; M=1 GEMM weights rotate over > L2 bytes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>

#include "cuda_test_util.h"

namespace anvil::test {
namespace {

bool bench_enabled() {
  const char* e = std::getenv("ANVIL_CUDA_BENCH");
  return e && std::string(e) == "1";
}

struct Report {
  std::ostringstream md;
  void row(const std::string& s) {
    md << s << "\n";
    std::printf("%s\n", s.c_str());
  }
  ~Report() {
    if (const char* p = std::getenv("ANVIL_BENCH_OUT")) std::ofstream(p, std::ios::app) << md.str();
  }
};

TEST(CudaBench, Ops) {
  ANVIL_REQUIRE_GPU();
  if (!bench_enabled()) GTEST_SKIP() << "set ANVIL_CUDA_BENCH=1 to run the micro-benchmarks";
  const DType dt = DType::kBF16;
  auto gpu = make_gpu(dt);
  ASSERT_TRUE(gpu);
  auto* be = static_cast<CudaBackend*>(gpu.get());
  Report rep;
  char line[512];

  // Ceiling: device-to-device copy of 1 GiB, bytes read + written.
  const size_t copy_bytes = size_t{1} << 30;
  auto c0 = DevBuf::poison(gpu.get(), copy_bytes);
  auto c1 = DevBuf::poison(gpu.get(), copy_bytes);
  const double copy_us = time_us(be->stream(), [&](int) { (void)gpu->copy_d2d(c1.buf.get(), c0.buf.get(), copy_bytes); }, 5, 4);
  const double ceiling = 2.0 * copy_bytes / copy_us / 1e3;  // GB/s
  rep.row("device: " + gpu->name());
  std::snprintf(line, sizeof line, "copy ceiling (d2d 1 GiB, read+write): %.0f GB/s", ceiling);
  rep.row(line);

  rep.row("\n| GEMM (bf16, fp32 acc) | M | N | K | us | TFLOP/s | GB/s | % of copy BW |");
  rep.row("| --- | --- | --- | --- | --- | --- | --- | --- |");
  struct G {
    const char* name;
    int64_t n, k;
  };
  const G shapes[] = {{"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate_up", 28672, 4096}, {"down", 4096, 14336},
                      {"lm_head", 128256, 4096}};
  for (int64_t m : {int64_t{1}, int64_t{2048}}) {
    for (const G& g : shapes) {
      const size_t wbytes = g.n * g.k * 2;
      const int copies = m == 1 ? static_cast<int>(std::clamp<size_t>((size_t{200} << 20) / wbytes + 1, 1, 4)) : 1;
      std::vector<DevBuf> ws;
      for (int i = 0; i < copies; ++i) ws.push_back(random_dev(gpu.get(), dt, g.n * g.k, 100 + i));
      auto x = random_dev(gpu.get(), dt, m * g.k, 7);
      const DType odt = std::string(g.name) == "lm_head" ? DType::kF32 : dt;
      auto o = DevBuf::poison(gpu.get(), m * g.n * dtype_size(odt));
      auto fn = [&](int i) {
        Status st = gpu->linear(x.t(dt, {m, g.k}), ws[i % copies].t(dt, {g.n, g.k}), Tensor(), o.t(odt, {m, g.n}));
        if (!st.is_ok()) ADD_FAILURE() << st.to_string();
      };
      const double us = time_us(be->stream(), fn, m == 1 ? 15 : 7, m == 1 ? 10 : 4);
      const double flops = 2.0 * m * g.n * g.k;
      const double bytes = static_cast<double>(wbytes) + m * g.k * 2.0 + m * g.n * dtype_size(odt);
      std::snprintf(line, sizeof line, "| %s | %lld | %lld | %lld | %.1f | %.1f | %.0f | %.0f%% |", g.name,
                    static_cast<long long>(m), static_cast<long long>(g.n), static_cast<long long>(g.k), us,
                    flops / us / 1e6, bytes / us / 1e3, 100.0 * bytes / us / 1e3 / ceiling);
      rep.row(line);
    }
  }

  rep.row("\n| op (bf16) | shape | us | bytes moved | GB/s | % of copy BW |");
  rep.row("| --- | --- | --- | --- | --- | --- |");
  auto report_bw = [&](const char* name, const char* shape, double us, double bytes) {
    std::snprintf(line, sizeof line, "| %s | %s | %.1f | %.1f MB | %.0f | %.0f%% |", name, shape, us, bytes / 1e6,
                  bytes / us / 1e3, 100.0 * bytes / us / 1e3 / ceiling);
    rep.row(line);
  };
  const int64_t t = 2048, h = 4096;
  {
    auto x = random_dev(gpu.get(), dt, t * h, 1);
    auto r = random_dev(gpu.get(), dt, t * h, 2);
    auto w = random_dev(gpu.get(), dt, h, 3);
    auto o = DevBuf::poison(gpu.get(), t * h * 2);
    const double us = time_us(be->stream(), [&](int) {
      (void)gpu->rms_norm(x.t(dt, {t, h}), r.t(dt, {t, h}), w.t(dt, {h}), 1e-5f, o.t(dt, {t, h}));
    });
    report_bw("rms_norm + residual", "T=2048 H=4096", us, 4.0 * t * h * 2);
    const double us2 = time_us(be->stream(), [&](int) {
      (void)gpu->rms_norm(x.t(dt, {t, h}), Tensor(), w.t(dt, {h}), 1e-5f, o.t(dt, {t, h}));
    });
    report_bw("rms_norm", "T=2048 H=4096", us2, 2.0 * t * h * 2);
  }
  {
    const int hq = 32, hkv = 8, d = 128, bs = 16;
    const int64_t row = (hq + 2 * hkv) * d;
    auto qkv = random_dev(gpu.get(), dt, t * row, 4);
    std::vector<float> inv(d / 2);
    for (int i = 0; i < d / 2; ++i) inv[i] = std::pow(500000.0f, -2.0f * i / d);
    std::vector<int32_t> pos(t), slot(t);
    for (int i = 0; i < t; ++i) pos[i] = slot[i] = i;
    auto d_inv = DevBuf::of(gpu.get(), inv);
    auto d_pos = DevBuf::of(gpu.get(), pos);
    auto d_slot = DevBuf::of(gpu.get(), slot);
    auto q = DevBuf::poison(gpu.get(), t * hq * d * 2);
    const int nb = t / bs;
    auto kc = DevBuf::poison(gpu.get(), size_t{2} * nb * hkv * bs * d);
    auto vc = DevBuf::poison(gpu.get(), size_t{2} * nb * hkv * bs * d);
    BatchView b;
    b.num_tokens = static_cast<int32_t>(t);
    b.positions = static_cast<const int32_t*>(d_pos.buf.get());
    b.slot_map = static_cast<const int32_t*>(d_slot.buf.get());
    KvCacheLayer kv{kc.buf.get(), vc.buf.get(), dt, nb, bs, hkv, d};
    const double us = time_us(be->stream(), [&](int) {
      (void)gpu->rope_kv_write(qkv.t(dt, {t, row}), Tensor(), Tensor(), 1e-6f, d_inv.t(DType::kF32, {d / 2}), 1.0f, b,
                               q.t(dt, {t, hq, d}), kv);
    });
    report_bw("rope_kv_write", "T=2048 Hq=32 Hkv=8 D=128", us, 2.0 * t * row * 2);
  }
  {
    const int64_t f = 14336;
    auto gu = random_dev(gpu.get(), dt, t * 2 * f, 5);
    auto o = DevBuf::poison(gpu.get(), t * f * 2);
    const double us = time_us(be->stream(), [&](int) { (void)gpu->act_mul(gu.t(dt, {t, 2 * f}), Activation::kSilu, o.t(dt, {t, f})); });
    report_bw("act_mul silu", "T=2048 F=14336", us, 3.0 * t * f * 2);
    const int64_t f2 = 4096;
    const double us2 = time_us(be->stream(), [&](int) {
      (void)gpu->act_mul(gu.t(dt, {t, 2 * f2}), Activation::kSilu, o.t(dt, {t, f2}));
    });
    report_bw("act_mul silu", "T=2048 F=4096", us2, 3.0 * t * f2 * 2);
  }

  rep.row("\n| sample (V=128256) | logits | rows | us | GB/s of logits read once |");
  rep.row("| --- | --- | --- | --- | --- |");
  const int64_t vocab = 128256;
  for (int dist = 0; dist < 2; ++dist)
  for (int rows : {1, 64, 256}) {
    // dist 0: uniform in [-10, 10] (flat: the radix fallback); dist 1: peaked like an LM head
    // (a few hundred plausible tokens, a long tail 15 nats below).
    auto lv = random_floats(rows * vocab, 9, -10.0f, 10.0f);
    if (dist == 1) {
      for (size_t i = 0; i < lv.size(); ++i) lv[i] = (i * 2654435761u) % 409 == 0 ? 8.0f + lv[i] * 0.3f : lv[i] * 0.2f - 5.0f;
    }
    auto logits = DevBuf::of(gpu.get(), lv);
    auto ids = DevBuf::poison(gpu.get(), rows * 4);
    auto lp = DevBuf::poison(gpu.get(), rows * 4);
    auto temp = DevBuf::of(gpu.get(), std::vector<float>(rows, 0.8f));
    auto topk = DevBuf::of(gpu.get(), std::vector<int32_t>(rows, 50));
    auto topp = DevBuf::of(gpu.get(), std::vector<float>(rows, 0.9f));
    auto seeds = DevBuf::of(gpu.get(), std::vector<uint64_t>(rows, 7));
    auto steps = DevBuf::of(gpu.get(), std::vector<int64_t>(rows, 3));
    for (int mode = 0; mode < 3; ++mode) {
      SamplingBatch sb;
      sb.num_rows = rows;
      sb.all_greedy = mode == 0;
      sb.temperature = static_cast<const float*>(temp.buf.get());
      sb.top_k = mode == 2 ? static_cast<const int32_t*>(topk.buf.get()) : nullptr;
      sb.top_p = mode == 2 ? static_cast<const float*>(topp.buf.get()) : nullptr;
      sb.seeds = static_cast<const uint64_t*>(seeds.buf.get());
      sb.steps = static_cast<const int64_t*>(steps.buf.get());
      const double us = time_us(be->stream(), [&](int) {
        (void)gpu->sample(logits.t(DType::kF32, {rows, vocab}), sb, ids.t(DType::kI32, {rows}), lp.t(DType::kF32, {rows}));
      });
      const char* names[] = {"greedy", "temperature", "top-k 50 + top-p 0.9"};
      std::snprintf(line, sizeof line, "| %s | %s | %d | %.1f | %.0f |", names[mode], dist ? "peaked" : "uniform +-10",
                    rows, us, rows * vocab * 4.0 / us / 1e3);
      rep.row(line);
    }
  }
}

}  // namespace
}  // namespace anvil::test
