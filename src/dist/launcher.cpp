// init_dist and the self-relaunch under mpirun. The relaunch reads this process's own command line
// from /proc/self/cmdline, so no caller has to keep argv around.
#include "dist/launcher.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <thread>
#include <vector>

#include "core/logging.h"
#include "dist/mpi_communicator.h"
#include "dist/nccl_communicator.h"

namespace anvil::dist {

DistContext::~DistContext() {
  tp.reset();
  world.reset();
  control.reset();
  mpi_finalize();
}

namespace {

Result<std::vector<std::string>> own_command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  if (!in) return unavailable("cannot read /proc/self/cmdline to relaunch under mpirun");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  size_t start = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i] != '\0') continue;
    args.push_back(all.substr(start, i - start));
    start = i + 1;
  }
  if (args.empty()) return unavailable("empty /proc/self/cmdline");
  return args;
}

std::string find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    const std::string cand = p.substr(start, end - start) + "/" + name;
    if (::access(cand.c_str(), X_OK) == 0) return cand;
    start = end + 1;
  }
  return "";
}

}  // namespace

Status relaunch_under_mpirun_if_needed(int world_size) {
  if (world_size <= 1 || launched_by_mpi()) return Status::ok();
  const std::string how = "start the ranks with `mpirun -np " + std::to_string(world_size) + " anvil ...` yourself";
  if (std::getenv("ANVIL_DIST_RELAUNCHED")) {
    return unavailable("relaunched under mpirun but the MPI environment is missing (OMPI_COMM_WORLD_SIZE); " + how);
  }
  if (!mpi_built()) return unavailable("--tp/--pp need MPI: this anvil was built without it (install libopenmpi-dev, rebuild)");
  const std::string mpirun = find_in_path("mpirun");
  if (mpirun.empty()) return unavailable("--tp/--pp on one host start their ranks with mpirun, which is not in PATH (apt-get install openmpi-bin), or " + how);
  ANVIL_ASSIGN_OR_RETURN(std::vector<std::string> args, own_command_line());
  char exe[4096] = {};
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) args[0] = std::string(exe, static_cast<size_t>(n));
  std::vector<std::string> cmd = {mpirun, "-np", std::to_string(world_size), "--bind-to", "none"};
  if (static_cast<unsigned>(world_size) > std::thread::hardware_concurrency()) cmd.push_back("--oversubscribe");
  if (::geteuid() == 0) cmd.push_back("--allow-run-as-root");
  cmd.insert(cmd.end(), args.begin(), args.end());
  setenv("ANVIL_DIST_RELAUNCHED", "1", 1);
  // One host: shared memory between ranks, no network needed; no CMA (containers often forbid it).
  setenv("OMPI_MCA_btl", "self,vader", 0);
  setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
  std::vector<char*> argv;
  for (std::string& a : cmd) argv.push_back(a.data());
  argv.push_back(nullptr);
  ANVIL_LOG_INFO("starting %d ranks: %s -np %d ...", world_size, mpirun.c_str(), world_size);
  std::fflush(stdout);
  std::fflush(stderr);
  ::execv(mpirun.c_str(), argv.data());
  return unavailable("exec " + mpirun + " failed; " + how);
}

Result<std::unique_ptr<DistContext>> init_dist(int32_t tp_size, int32_t pp_size, bool cuda) {
  auto ctx = std::make_unique<DistContext>();
  ctx->options = comm_options_from_env();
  const int expected = tp_size * pp_size;
  if (!launched_by_mpi()) {
    return unavailable("--tp " + std::to_string(tp_size) + " --pp " + std::to_string(pp_size) +
                       " needs " + std::to_string(expected) + " ranks started by mpirun");
  }
  if (launcher_world_size() != expected) {
    return invalid_argument("mpirun started " + std::to_string(launcher_world_size()) + " ranks but --tp " +
                            std::to_string(tp_size) + " x --pp " + std::to_string(pp_size) + " needs " +
                            std::to_string(expected) + " (mpirun -np " + std::to_string(expected) + ")");
  }
  ANVIL_ASSIGN_OR_RETURN(ctx->control, create_mpi_world(ctx->options));
  ANVIL_ASSIGN_OR_RETURN(ctx->config, ParallelConfig::for_world_rank(tp_size, pp_size, ctx->control->rank()));
  const ParallelConfig& pc = ctx->config;
  if (cuda) {
    ctx->cuda_device = std::max(0, launcher_local_rank());
    ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> host, ctx->control->split(0, pc.world_rank()));
    ANVIL_ASSIGN_OR_RETURN(ctx->world, create_nccl_communicator(std::move(host), ctx->cuda_device, ctx->options));
  } else {
    ANVIL_ASSIGN_OR_RETURN(ctx->world, ctx->control->split(0, pc.world_rank()));
  }
  ANVIL_ASSIGN_OR_RETURN(ctx->tp, ctx->world->split(pc.pp_rank, pc.tp_rank));
  ANVIL_LOG_INFO("rank %d of %d (%s) up: %s collectives, timeout %.0f s", pc.world_rank(), pc.world_size(),
                 pc.to_string().c_str(), ctx->world->name().c_str(), ctx->options.timeout_seconds);
  return ctx;
}

}  // namespace anvil::dist
