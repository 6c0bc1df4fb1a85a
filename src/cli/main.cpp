// anvil command line: `anvil <subcommand> [options]`. Subcommands register themselves
// (command.h); main builds the CLI11 app, parses and returns the subcommand's exit code.
#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "cli/command.h"

namespace anvil::cli {
namespace {

std::vector<std::pair<std::string, CommandSetup>>& registry() {
  static std::vector<std::pair<std::string, CommandSetup>> r;
  return r;
}
int g_exit_code = 0;

}  // namespace

CommandRegistrar::CommandRegistrar(const char* name, CommandSetup setup) { registry().emplace_back(name, setup); }
void set_exit_code(int code) { g_exit_code = code; }

}  // namespace anvil::cli

int main(int argc, char** argv) {
  CLI::App app{"anvil: LLM inference engine for NVIDIA GPUs (CPU reference backend included)"};
  app.set_version_flag("--version", std::string("anvil ") + ANVIL_VERSION);
  app.require_subcommand(1);
  auto& reg = anvil::cli::registry();
  std::sort(reg.begin(), reg.end());
  for (auto& [name, setup] : reg) setup(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return anvil::cli::g_exit_code;
}
