// CLI subcommand registry. Each src/cli/<name>.cpp defines one subcommand and registers it with a
// static CommandRegistrar, so adding a command never touches main.cpp:
//
//   static int run_tokenize(const TokenizeOptions& o);
//   static void setup(CLI::App& app) {
//     auto* cmd = app.add_subcommand("tokenize", "...");
//     auto opts = std::make_shared<TokenizeOptions>();
//     cmd->add_option("--model", opts->model, "...");
//     cmd->callback([opts] { anvil::cli::set_exit_code(run_tokenize(*opts)); });
//   }
//   static anvil::cli::CommandRegistrar reg("tokenize", setup);
#pragma once

#include <CLI/CLI.hpp>

namespace anvil::cli {

using CommandSetup = void (*)(CLI::App& app);

struct CommandRegistrar {
  CommandRegistrar(const char* name, CommandSetup setup);
};

// Sets the process exit code from inside a subcommand callback.
void set_exit_code(int code);

}  // namespace anvil::cli
