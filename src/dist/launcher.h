// Starting a tp x pp job and wiring its communicators. `anvil run|serve --tp N` on one host
// re-executes itself under `mpirun -np N` (ranks always come from an MPI launcher; no home-made
// transport); `mpirun -np N anvil ... --tp N` across hosts goes straight to init_dist(). Each rank
// then gets: a host control communicator over the world (step broadcast from rank 0), a world
// communicator in the backend's memory (pipeline send/recv, logits to rank 0) and its
// tensor-parallel group's communicator (all_reduce, all_gather): MPI for CPU ranks, NCCL for GPUs.
#pragma once

#include <memory>
#include <string>

#include "dist/communicator.h"
#include "dist/sharding.h"

namespace anvil::dist {

struct DistContext {
  ParallelConfig config;
  std::unique_ptr<Communicator> control;  // world, host memory
  std::unique_ptr<Communicator> world;    // world, backend memory
  std::unique_ptr<Communicator> tp;       // this rank's tensor-parallel group, backend memory
  CommOptions options;
  int cuda_device = -1;                   // the GPU this rank uses (CUDA jobs)

  bool is_leader() const { return config.world_rank() == 0; }
  DistContext() = default;
  DistContext(const DistContext&) = delete;
  DistContext& operator=(const DistContext&) = delete;
  // Frees the communicators, then finalizes MPI.
  ~DistContext();
};

// For a job of world_size > 1 ranks not started by an MPI launcher: replaces this process with
// `mpirun -np world_size <this program and its arguments>` (returns only on failure, with an
// error saying how to start the ranks by hand). Returns OK at once when world_size == 1 or the
// process already is a rank of an MPI job.
Status relaunch_under_mpirun_if_needed(int world_size);

// Creates this rank's communicators for a tp x pp job (world size from the launcher must equal
// tp * pp). cuda: NCCL in device memory on GPU `local rank`, else MPI in host memory.
Result<std::unique_ptr<DistContext>> init_dist(int32_t tp_size, int32_t pp_size, bool cuda);

}  // namespace anvil::dist
