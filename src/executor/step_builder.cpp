// StepInput and SamplingBatch construction for one step.
#include "executor/step_builder.h"

#include <cmath>
#include <cstring>
#include <unordered_set>

namespace anvil {

StepInput build_step_input(const std::vector<ScheduledSeq>& scheduled, int32_t block_size) {
  StepInput s;
  s.seq_starts.push_back(0);
  for (const ScheduledSeq& sc : scheduled) {
    Sequence& q = *sc.seq;
    const int32_t begin = q.num_computed, end = q.num_computed + sc.num_new;
    for (int32_t p = begin; p < end; ++p) {
      s.token_ids.push_back(q.tokens[p]);
      s.positions.push_back(p);
      s.slot_map.push_back(q.blocks[p / block_size] * block_size + p % block_size);
    }
    if (sc.sample) {
      for (size_t r = 0; r <= sc.forks.size(); ++r) s.logit_rows.push_back(static_cast<int32_t>(s.token_ids.size()) - 1);
    }
    s.seq_starts.push_back(static_cast<int32_t>(s.token_ids.size()));
    s.context_lens.push_back(end);
    s.block_tables.push_back(q.blocks);
  }
  return s;
}

void SamplingInputs::build(const std::vector<ScheduledSeq>& scheduled, const std::vector<int64_t>& eos) {
  rows_ = 0;
  all_greedy_ = true;
  any_penalty_ = any_bias_ = false;
  for (auto* v : {&temperature_, &top_p_, &min_p_, &rep_, &pres_, &freq_}) v->clear();
  top_k_.clear();
  seeds_.clear();
  steps_.clear();
  pen_offsets_.assign(1, 0);
  pen_ids_.clear();
  pen_counts_.clear();
  bias_offsets_.assign(1, 0);
  bias_ids_.clear();
  bias_values_.clear();
  for (const ScheduledSeq& sc : scheduled) {
    if (!sc.sample) continue;
    add_row(*sc.seq, eos);
    for (const Sequence* f : sc.forks) add_row(*f, eos);
  }
}

void SamplingInputs::add_row(const Sequence& q, const std::vector<int64_t>& eos) {
  {
    const SamplingParams& p = q.req->request.sampling;
    const bool beam = q.req->is_beam();
    ++rows_;
    temperature_.push_back(beam ? 0.0f : p.temperature);
    top_k_.push_back(p.top_k);
    top_p_.push_back(p.top_p);
    min_p_.push_back(p.min_p);
    rep_.push_back(p.repetition_penalty);
    pres_.push_back(p.presence_penalty);
    freq_.push_back(p.frequency_penalty);
    seeds_.push_back(q.req->seed + static_cast<uint64_t>(q.index));
    steps_.push_back(q.num_generated());
    if (p.temperature > 0 && !beam) all_greedy_ = false;
    const bool penalize =
        !beam && (p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f);
    if (penalize) {
      any_penalty_ = true;
      // Distinct tokens seen: generated ones carry their counts; prompt-only ones count 0.
      for (const auto& [tok, count] : q.output_counts) {
        pen_ids_.push_back(tok);
        pen_counts_.push_back(count);
      }
      if (p.repetition_penalty != 1.0f) {
        std::unordered_set<int32_t> seen;
        for (int32_t i = 0; i < q.num_prompt; ++i) {
          const int32_t tok = q.tokens[i];
          if (q.output_counts.count(tok) || !seen.insert(tok).second) continue;
          pen_ids_.push_back(tok);
          pen_counts_.push_back(0);
        }
      }
    }
    pen_offsets_.push_back(static_cast<int32_t>(pen_ids_.size()));
    // min_tokens: EOS and stop tokens are banned until enough tokens are out.
    if (!beam && q.num_generated() < p.min_tokens) {
      any_bias_ = true;
      if (!p.ignore_eos) {
        for (int64_t e : eos) {
          bias_ids_.push_back(static_cast<int32_t>(e));
          bias_values_.push_back(-INFINITY);
        }
      }
      for (int32_t s : p.stop_token_ids) {
        bias_ids_.push_back(s);
        bias_values_.push_back(-INFINITY);
      }
    }
    bias_offsets_.push_back(static_cast<int32_t>(bias_ids_.size()));
  }
}

Result<SamplingBatch> SamplingInputs::upload(Backend* backend, DeviceBuffer* device) {
  // One packed buffer, each array 64-byte aligned.
  size_t off = 0;
  auto reserve = [&](size_t bytes) {
    size_t at = off;
    off += (bytes + 63) / 64 * 64;
    return at;
  };
  const size_t o_temp = reserve(rows_ * 4), o_topk = reserve(rows_ * 4), o_topp = reserve(rows_ * 4),
               o_minp = reserve(rows_ * 4), o_rep = reserve(rows_ * 4), o_pres = reserve(rows_ * 4),
               o_freq = reserve(rows_ * 4), o_seed = reserve(rows_ * 8), o_step = reserve(rows_ * 8),
               o_poff = reserve(pen_offsets_.size() * 4), o_pid = reserve(pen_ids_.size() * 4),
               o_pcnt = reserve(pen_counts_.size() * 4), o_boff = reserve(bias_offsets_.size() * 4),
               o_bid = reserve(bias_ids_.size() * 4), o_bval = reserve(bias_values_.size() * 4);
  host_.assign(off, 0);
  auto put = [&](size_t at, const void* src, size_t bytes) {
    if (bytes) std::memcpy(host_.data() + at, src, bytes);
  };
  put(o_temp, temperature_.data(), rows_ * 4);
  put(o_topk, top_k_.data(), rows_ * 4);
  put(o_topp, top_p_.data(), rows_ * 4);
  put(o_minp, min_p_.data(), rows_ * 4);
  put(o_rep, rep_.data(), rows_ * 4);
  put(o_pres, pres_.data(), rows_ * 4);
  put(o_freq, freq_.data(), rows_ * 4);
  put(o_seed, seeds_.data(), rows_ * 8);
  put(o_step, steps_.data(), rows_ * 8);
  put(o_poff, pen_offsets_.data(), pen_offsets_.size() * 4);
  put(o_pid, pen_ids_.data(), pen_ids_.size() * 4);
  put(o_pcnt, pen_counts_.data(), pen_counts_.size() * 4);
  put(o_boff, bias_offsets_.data(), bias_offsets_.size() * 4);
  put(o_bid, bias_ids_.data(), bias_ids_.size() * 4);
  put(o_bval, bias_values_.data(), bias_values_.size() * 4);
  if (device->bytes() < off) {
    device->reset();
    ANVIL_ASSIGN_OR_RETURN(*device, DeviceBuffer::create(backend, off * 2));
  }
  ANVIL_RETURN_IF_ERROR(backend->copy_h2d(device->get(), host_.data(), off));
  auto* base = static_cast<uint8_t*>(device->get());
  SamplingBatch b;
  b.num_rows = rows_;
  b.all_greedy = all_greedy_;
  b.any_penalty = any_penalty_;
  b.any_bias = any_bias_;
  b.temperature = reinterpret_cast<const float*>(base + o_temp);
  b.top_k = reinterpret_cast<const int32_t*>(base + o_topk);
  b.top_p = reinterpret_cast<const float*>(base + o_topp);
  b.min_p = reinterpret_cast<const float*>(base + o_minp);
  b.repetition_penalty = reinterpret_cast<const float*>(base + o_rep);
  b.presence_penalty = reinterpret_cast<const float*>(base + o_pres);
  b.frequency_penalty = reinterpret_cast<const float*>(base + o_freq);
  b.seeds = reinterpret_cast<const uint64_t*>(base + o_seed);
  b.steps = reinterpret_cast<const int64_t*>(base + o_step);
  b.penalty_offsets = reinterpret_cast<const int32_t*>(base + o_poff);
  b.penalty_token_ids = reinterpret_cast<const int32_t*>(base + o_pid);
  b.penalty_output_counts = reinterpret_cast<const int32_t*>(base + o_pcnt);
  b.bias_offsets = reinterpret_cast<const int32_t*>(base + o_boff);
  b.bias_token_ids = reinterpret_cast<const int32_t*>(base + o_bid);
  b.bias_values = reinterpret_cast<const float*>(base + o_bval);
  return b;
}

}  // namespace anvil
