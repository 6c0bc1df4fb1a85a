// libFuzzer target for the GGUF reader: parse arbitrary bytes, and where they parse, dequantize the
// tensors and build the config and tokenizer as `anvil convert` would. Any crash, sanitizer report,
// or allocation beyond libFuzzer's -rss_limit_mb is a bug. Seed corpus: tests/data/gguf/.
#include <cstddef>
#include <cstdint>

#include "model/checkpoint/gguf_convert.h"
#include "model/checkpoint/gguf_file.h"
#include "model/checkpoint/gguf_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace anvil::gguf;
  auto file = GgufFile::parse(data, size, "fuzz.gguf");
  if (!file.is_ok()) return 0;
  const GgufFile& f = **file;
  for (const TensorInfo& t : f.tensors()) {
    if (t.numel() <= (1 << 20)) (void)f.dequantize_tensor(t);
  }
  auto config = read_llama_config(f);
  if (config.is_ok()) {
    for (const TensorInfo& t : f.tensors()) {
      if (t.numel() <= (1 << 20)) (void)convert_llama_tensor(f, t, *config);
    }
  }
  (void)build_hf_tokenizer(f, 0);
  return 0;
}
