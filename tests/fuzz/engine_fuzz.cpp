// libFuzzer target for the engine file parser (src/build/engine_file.h): arbitrary bytes are
// written to a temp file and opened; whatever the bytes, open() returns a Status (never crashes,
// never allocates without bound), and an engine that opens verifies its weights without faults.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "build/engine_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/anvil_engine_fuzz_" + std::to_string(::getpid()) + ".anvil";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  auto engine = anvil::EngineFile::open(path);
  if (engine.is_ok()) (void)engine->verify_all_weights();
  return 0;
}
