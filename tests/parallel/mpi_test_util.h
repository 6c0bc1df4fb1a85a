// Running a test binary's own worker tests as the ranks of an MPI job: the outer test starts
// `mpirun -np N <this binary> --gtest_filter=<worker>` with ANVIL_MPI_WORKER=1 and the given
// variables, waits (bounded by `timeout`), and returns the exit code, the output and the time.
// Worker tests skip unless ANVIL_MPI_WORKER is set. Outer tests skip where mpirun is missing.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

namespace anvil::test {

inline bool in_mpi_worker() { return std::getenv("ANVIL_MPI_WORKER") != nullptr; }

inline bool mpirun_available() { return std::system("command -v mpirun >/dev/null 2>&1") == 0; }

inline std::string self_exe() {
  char buf[4096] = {};
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

struct MpiRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr of every rank and of mpirun
  double seconds = 0;
};

// extra_mca: more "--mca key value" pairs for mpirun.
inline MpiRun run_mpi_workers(int ranks, const std::string& gtest_filter, const std::map<std::string, std::string>& env,
                              int timeout_seconds = 120, const std::string& extra_mca = "") {
  std::string cmd = "timeout -k 5 " + std::to_string(timeout_seconds) + " mpirun -np " + std::to_string(ranks) +
                    " --oversubscribe --bind-to none --mca btl self,vader --mca btl_vader_single_copy_mechanism none " +
                    extra_mca;
  if (::geteuid() == 0) cmd += " --allow-run-as-root";
  cmd += " -x ANVIL_MPI_WORKER=1";
  for (const auto& [k, v] : env) cmd += " -x " + k + "='" + v + "'";
  cmd += " '" + self_exe() + "' --gtest_color=no --gtest_filter=" + gtest_filter + " 2>&1";
  MpiRun r;
  const auto t0 = std::chrono::steady_clock::now();
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace anvil::test
