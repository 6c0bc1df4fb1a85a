// MPI: starts and reaches the ranks of a job (mpirun), moves CPU ranks' tensors (host memory) and
// carries the control messages of every job (step broadcast, NCCL's unique id). Every transfer is
// non-blocking and polled against a deadline; on a timeout the waiting rank pings its peers over a
// separate channel and names the ranks that did not answer (and whether their process is gone).
// MPI is initialized once per process with MPI_THREAD_SERIALIZED: calls may come from any thread,
// one at a time.
#pragma once

#include <memory>
#include <string>

#include "dist/communicator.h"

namespace anvil::dist {

// True when anvil was built with MPI (ANVIL_HAVE_MPI).
bool mpi_built();
// True when this process was started by mpirun / an MPI launcher (its environment says so).
bool launched_by_mpi();
// World size and rank from the launcher's environment (before MPI_Init); -1 when absent.
int launcher_world_size();
int launcher_world_rank();
int launcher_local_rank();

// MPI_Init_thread once (idempotent). Errors name what failed.
Status mpi_init();
// MPI_Finalize if mpi_init() ran. Call once, after every communicator is gone.
void mpi_finalize();

// The world communicator of this job (a duplicate of MPI_COMM_WORLD). Calls mpi_init().
Result<std::unique_ptr<Communicator>> create_mpi_world(const CommOptions& options);

}  // namespace anvil::dist
