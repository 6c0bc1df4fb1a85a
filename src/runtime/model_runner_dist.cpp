// ModelRunner in a tensor x pipeline parallel job. Rank 0 (stage 0, tp rank 0) validates each
// step, broadcasts it to every rank (a fixed header, then the int32 arrays), and all ranks run
// their part of the graph: all_reduce / all_gather over the tensor-parallel group, the residual
// stream sent from stage to stage. The last stage's tp rank 0 sends the logits to rank 0 when
// rank 0 is not on it. Step message layout (int32):
//
//   header  [kind, num_tokens, num_seqs, num_logit_rows, table_elems, step_no, 0, 0]
//   payload token_ids[T] positions[T] seq_starts[S+1] context_lens[S] slot_map[T]
//           logit_rows[R] table_lens[S] tables[table_elems]
#include <array>

#include "core/logging.h"
#include "runtime/model_runner.h"

namespace anvil {

namespace {

constexpr int32_t kStepRun = 0x53544550;   // "STEP"
constexpr int32_t kStepStop = 0x53544f50;  // "STOP"
using StepHeader = std::array<int32_t, 8>;

void encode_step(const StepInput& s, int64_t step_no, StepHeader* header, std::vector<int32_t>* payload) {
  int32_t table_elems = 0;
  for (const auto& t : s.block_tables) table_elems += static_cast<int32_t>(t.size());
  *header = {kStepRun,
             static_cast<int32_t>(s.token_ids.size()),
             static_cast<int32_t>(s.context_lens.size()),
             static_cast<int32_t>(s.logit_rows.size()),
             table_elems,
             static_cast<int32_t>(step_no),
             0,
             0};
  payload->clear();
  auto put = [&](const std::vector<int32_t>& v) { payload->insert(payload->end(), v.begin(), v.end()); };
  put(s.token_ids);
  put(s.positions);
  put(s.seq_starts);
  put(s.context_lens);
  put(s.slot_map);
  put(s.logit_rows);
  for (const auto& t : s.block_tables) payload->push_back(static_cast<int32_t>(t.size()));
  for (const auto& t : s.block_tables) put(t);
}

size_t payload_size(const StepHeader& h) {
  const size_t t = h[1], n = h[2], rows = h[3], tables = h[4];
  return 3 * t + (n + 1) + n + rows + n + tables;
}

Status decode_step(const StepHeader& h, const std::vector<int32_t>& p, StepInput* s) {
  if (h[1] < 0 || h[2] < 0 || h[3] < 0 || h[4] < 0 || p.size() != payload_size(h)) {
    return data_loss("malformed step message from rank 0");
  }
  size_t at = 0;
  auto take = [&](size_t n, std::vector<int32_t>* out) {
    out->assign(p.begin() + static_cast<ptrdiff_t>(at), p.begin() + static_cast<ptrdiff_t>(at + n));
    at += n;
  };
  const size_t t = h[1], n = h[2];
  take(t, &s->token_ids);
  take(t, &s->positions);
  take(n + 1, &s->seq_starts);
  take(n, &s->context_lens);
  take(t, &s->slot_map);
  take(h[3], &s->logit_rows);
  std::vector<int32_t> lens;
  take(n, &lens);
  s->block_tables.resize(n);
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    if (lens[i] < 0) return data_loss("malformed step message from rank 0 (negative block table length)");
    total += lens[i];
  }
  if (total != static_cast<size_t>(h[4])) return data_loss("malformed step message from rank 0 (block tables)");
  for (size_t i = 0; i < n; ++i) take(lens[i], &s->block_tables[i]);
  return Status::ok();
}

}  // namespace

Status ModelRunner::init_distributed() {
  const dist::ParallelConfig& pc = def_.parallel;
  const RunnerOptions& o = options_;
  const std::string me = "rank " + std::to_string(pc.world_rank()) + " (" + pc.to_string() + ")";
  if (!o.comm_control || !o.comm_world || !o.comm_tp) {
    return invalid_argument(me + ": a parallel model needs its communicators (RunnerOptions::comm_*)");
  }
  if (o.comm_control->size() != pc.world_size() || o.comm_world->size() != pc.world_size() ||
      o.comm_tp->size() != pc.tp_size || o.comm_world->rank() != pc.world_rank() || o.comm_tp->rank() != pc.tp_rank ||
      o.comm_control->rank() != pc.world_rank()) {
    return invalid_argument(me + ": the communicators' sizes and ranks do not match the parallel config");
  }
  const dist::CommMemory want = backend_->device() == Device::kCpu ? dist::CommMemory::kHost : dist::CommMemory::kDevice;
  if (o.comm_world->memory() != want || o.comm_tp->memory() != want || o.comm_control->memory() != dist::CommMemory::kHost) {
    return invalid_argument(me + ": " + o.comm_world->name() + " communicators do not reach " + backend_->name() +
                            " memory (CPU ranks use MPI, GPU ranks NCCL)");
  }
  // Collectives are not captured into CUDA graphs (yet): every distributed step runs eagerly.
  graphs_supported_ = false;
  const ModelSpec& spec = def_.spec;
  if (pc.tp_size > 1 && rank_.last_stage) {
    const size_t bytes = static_cast<size_t>(pc.tp_size) * o.max_logit_rows * rank_.vocab_shard * sizeof(float);
    ANVIL_ASSIGN_OR_RETURN(gather_scratch_, DeviceBuffer::create(backend_, bytes));
  }
  if (pc.world_rank() == 0 && !rank_.last_stage) {
    ANVIL_ASSIGN_OR_RETURN(stage_logits_,
                           DeviceBuffer::create(backend_, static_cast<size_t>(o.max_logit_rows) * spec.vocab_size * sizeof(float)));
  }
  if (o.watchdog_seconds > 0) watchdog_ = std::make_unique<dist::StepWatchdog>(me, o.watchdog_seconds);
  ANVIL_LOG_INFO("%s: layers [%lld, %lld), %lld of %lld heads, %lld KV heads, vocab shard %lld", me.c_str(),
                 static_cast<long long>(rank_.layer_begin), static_cast<long long>(rank_.layer_end),
                 static_cast<long long>(rank_.num_heads), static_cast<long long>(spec.num_heads),
                 static_cast<long long>(rank_.num_kv_heads), static_cast<long long>(rank_.vocab_shard));
  return Status::ok();
}

Status ModelRunner::run_collective(const Node& n, int64_t nt, int64_t nr) {
  const dist::ParallelConfig& pc = def_.parallel;
  if (!distributed()) return unsupported(std::string(op_kind_name(n.op)) + ": this runner is not part of a parallel job");
  // The inputs must be complete before another rank (or NCCL's stream) reads them.
  ANVIL_RETURN_IF_ERROR(backend_->synchronize());
  switch (n.op) {
    case OpKind::kAllReduce: {
      Tensor x = activation(n.inputs[0], nt, nr);
      return options_.comm_tp->all_reduce_sum(x.data, static_cast<size_t>(x.numel()), x.dtype);
    }
    case OpKind::kAllGather: {
      Tensor x = activation(n.inputs[0], nt, nr);
      Tensor out = activation(n.outputs[0], nt, nr);
      return options_.comm_tp->all_gather_columns(x.data, out.data, gather_scratch_.get(), x.dim(0), x.dim(1), out.dim(1),
                                                  dtype_size(x.dtype));
    }
    case OpKind::kSend: {
      Tensor x = activation(n.inputs[0], nt, nr);
      return options_.comm_world->send(x.data, x.nbytes(), pc.world_rank_of(pc.pp_rank + 1, pc.tp_rank));
    }
    case OpKind::kRecv: {
      Tensor x = activation(n.outputs[0], nt, nr);
      return options_.comm_world->recv(x.data, x.nbytes(), pc.world_rank_of(pc.pp_rank - 1, pc.tp_rank));
    }
    case OpKind::kEmbedding:
    case OpKind::kRmsNorm:
    case OpKind::kLinear:
    case OpKind::kRopeKvWrite:
    case OpKind::kAttention:
    case OpKind::kActMul:
    case OpKind::kGatherRows:
    case OpKind::kQLinear: break;
  }
  return internal_error(std::string(op_kind_name(n.op)) + " is not a collective");
}

Status ModelRunner::run_distributed_step(const StepInput& step, Tensor* logits) {
  const dist::ParallelConfig& pc = def_.parallel;
  BatchView view;
  int32_t rows = 0;
  ANVIL_RETURN_IF_ERROR(upload(step, 0, &view, &rows));
  if (watchdog_) watchdog_->begin_step(step_count_);
  ++step_count_;
  Status st = run_nodes(view, rows);
  if (st.is_ok() && rank_.last_stage) {
    Tensor out = activation(def_.graph.outputs()[0], view.num_tokens, rows);
    if (pc.world_rank() == 0) {
      *logits = out;
    } else if (pc.tp_rank == 0) {
      st = backend_->synchronize();
      if (st.is_ok()) st = options_.comm_world->send(out.data, out.nbytes(), 0).with_context("logits to rank 0");
    }
  } else if (st.is_ok() && pc.world_rank() == 0) {
    Tensor out(stage_logits_.get(), DType::kF32, Shape{rows, def_.spec.vocab_size}, backend_->device());
    st = options_.comm_world->recv(out.data, out.nbytes(), pc.world_rank_of(pc.pp_size - 1, 0)).with_context("logits from the last stage");
    *logits = out;
  }
  if (watchdog_) watchdog_->end_step();
  return st;
}

Status ModelRunner::forward_distributed(const StepInput& step, Tensor* logits) {
  const dist::ParallelConfig& pc = def_.parallel;
  if (is_follower()) {
    return invalid_argument("rank " + std::to_string(pc.world_rank()) + " follows rank 0's steps: call follow(), not forward()");
  }
  // Validate here, so a bad step fails alone instead of reaching the other ranks.
  BatchView view;
  int32_t rows = 0;
  ANVIL_RETURN_IF_ERROR(upload(step, 0, &view, &rows));
  StepHeader header;
  std::vector<int32_t> payload;
  encode_step(step, step_count_.load(), &header, &payload);
  Status st = options_.comm_control->broadcast(header.data(), sizeof(header), 0);
  if (st.is_ok()) st = options_.comm_control->broadcast(payload.data(), payload.size() * sizeof(int32_t), 0);
  if (st.is_ok()) st = run_distributed_step(step, logits);
  if (!st.is_ok()) {
    // The ranks are out of step now: end the job rather than leave peers waiting.
    ANVIL_LOG_ERROR("rank 0: step %lld failed, ending every rank: %s", static_cast<long long>(step_count_.load()),
                    st.to_string().c_str());
    options_.comm_control->abort_job(1);
  }
  return st;
}

Status ModelRunner::follow() {
  const dist::ParallelConfig& pc = def_.parallel;
  if (!is_follower()) return invalid_argument("follow(): rank 0 drives the steps; only the other ranks follow");
  const std::string me = "rank " + std::to_string(pc.world_rank());
  StepHeader header;
  std::vector<int32_t> payload;
  StepInput step;
  for (;;) {
    Status st = options_.comm_control->broadcast(header.data(), sizeof(header), 0, dist::WaitPolicy::kIdle);
    if (!st.is_ok()) return st.with_context(me + " waiting for the next step");
    if (header[0] == kStepStop) return Status::ok();
    if (header[0] != kStepRun) return data_loss(me + ": unknown message from rank 0");
    if (header[1] < 0 || header[2] < 0 || header[3] < 0 || header[4] < 0 || header[1] > options_.max_num_tokens ||
        header[2] > options_.max_num_seqs || header[3] > options_.max_logit_rows ||
        static_cast<int64_t>(header[4]) > static_cast<int64_t>(options_.max_num_seqs) * max_blocks_per_seq_) {
      return data_loss(me + ": malformed step message from rank 0");
    }
    payload.resize(payload_size(header));
    st = options_.comm_control->broadcast(payload.data(), payload.size() * sizeof(int32_t), 0);
    if (!st.is_ok()) return st.with_context(me + " receiving step " + std::to_string(header[5]));
    ANVIL_RETURN_IF_ERROR(decode_step(header, payload, &step));
    Tensor unused;
    st = run_distributed_step(step, &unused);
    if (!st.is_ok()) return st.with_context(me + " in step " + std::to_string(header[5]));
  }
}

Status ModelRunner::stop_followers() {
  if (!distributed() || is_follower()) return Status::ok();
  StepHeader header = {kStepStop, 0, 0, 0, 0, static_cast<int32_t>(step_count_.load()), 0, 0};
  return options_.comm_control->broadcast(header.data(), sizeof(header), 0);
}

}  // namespace anvil
