// CudaBackend::attention wiring (metadata, split-KV workspace sizing) against the CPU reference
// on a mixed batch: a prefill, a decode row and a chunked-prefill continuation over a paged cache
// with scattered blocks. The kernels themselves are tested in attention_test.cu.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "cuda_test_util.h"

namespace anvil::test {
namespace {

TEST(CudaBackendAttention, MixedBatchMatchesCpu) {
  ANVIL_REQUIRE_GPU();
  CpuBackend cpu;
  for (DType dt : {DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(name_of(dt));
    auto gpu = make_gpu(dt);
    ASSERT_TRUE(gpu);
    const int hq = 8, hkv = 2, d = 128, bs = 16, num_blocks = 24, max_blocks = 8;
    const std::vector<int32_t> q_lens = {17, 1, 5}, ctx = {17, 40, 33};
    std::vector<int32_t> seq_starts = {0};
    for (int32_t q : q_lens) seq_starts.push_back(seq_starts.back() + q);
    const int t = seq_starts.back(), seqs = static_cast<int>(q_lens.size());
    // Scattered blocks: sequence s uses blocks (7 * (s * max_blocks + j)) % num_blocks, distinct.
    std::vector<int32_t> tables(seqs * max_blocks);
    std::vector<int32_t> order(num_blocks);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(4));
    for (int i = 0; i < seqs * max_blocks; ++i) tables[i] = order[i % num_blocks];
    const size_t cache_elems = static_cast<size_t>(num_blocks) * hkv * bs * d;
    auto k = random_floats(cache_elems, 1);
    auto v = random_floats(cache_elems, 2);
    auto q = random_floats(static_cast<size_t>(t) * hq * d, 3);
    auto kb = round_to(dt, k);
    auto vb = round_to(dt, v);
    auto qb = round_to(dt, q);
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));

    BatchView hb;
    hb.num_tokens = t;
    hb.num_seqs = seqs;
    hb.max_query_len = 17;
    hb.max_context_len = 40;
    hb.max_blocks_per_seq = max_blocks;
    hb.seq_starts = seq_starts.data();
    hb.context_lens = ctx.data();
    hb.block_tables = tables.data();
    std::vector<float> ref(q.size());
    KvCacheLayer hkvl{k.data(), v.data(), DType::kF32, num_blocks, bs, hkv, d};
    ASSERT_TRUE(cpu.attention(host_tensor(q, {t, hq, d}), hkvl, hb, scale, host_tensor(ref, {t, hq, d})).is_ok());

    auto d_k = DevBuf::of(gpu.get(), kb);
    auto d_v = DevBuf::of(gpu.get(), vb);
    auto d_q = DevBuf::of(gpu.get(), qb);
    auto d_out = DevBuf::poison(gpu.get(), q.size() * 2);
    auto d_starts = DevBuf::of(gpu.get(), seq_starts);
    auto d_ctx = DevBuf::of(gpu.get(), ctx);
    auto d_tables = DevBuf::of(gpu.get(), tables);
    BatchView db = hb;
    db.seq_starts = static_cast<const int32_t*>(d_starts.buf.get());
    db.context_lens = static_cast<const int32_t*>(d_ctx.buf.get());
    db.block_tables = static_cast<const int32_t*>(d_tables.buf.get());
    KvCacheLayer dkv{d_k.buf.get(), d_v.buf.get(), dt, num_blocks, bs, hkv, d};
    Status st = gpu->attention(d_q.t(dt, {t, hq, d}), dkv, db, scale, d_out.t(dt, {t, hq, d}));
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    EXPECT_LT(rel_err(to_f32(dt, d_out.read<uint16_t>(q.size())), ref), dt == DType::kBF16 ? 1e-2 : 2e-3);
  }
}

}  // namespace
}  // namespace anvil::test
