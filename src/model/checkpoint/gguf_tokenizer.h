// Rebuilds a Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) from a GGUF file's
// tokenizer.* metadata, equivalent to what transformers' GGUF import builds: byte-level BPE for
// tokenizer.ggml.model "gpt2" (pre-tokenizer chosen by tokenizer.ggml.pre), SentencePiece-style
// BPE with byte fallback for "llama". Unknown models or pre-tokenizers are refused by name.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "model/checkpoint/gguf_file.h"

namespace anvil::gguf {

struct HfTokenizer {
  std::string tokenizer_json;         // tokenizer.json text
  std::string tokenizer_config_json;  // tokenizer_config.json text (with chat_template if any)
  int64_t vocab_size = 0;             // tokens in the vocabulary
  int64_t bos_token_id = -1;          // -1 where the file names none
  int64_t eos_token_id = -1;
  int64_t pad_token_id = -1;
  int64_t unk_token_id = -1;
};

// `model_max_length` goes to tokenizer_config.json (the model's context length; 0 to omit).
Result<HfTokenizer> build_hf_tokenizer(const GgufFile& file, int64_t model_max_length);

// HF's merge recovery for vocabularies without merges (transformers' generate_merges): every
// split of a token into two vocabulary pieces, ordered by score (descending, when scores are
// given) or by token id (ascending), then by piece lengths in code points. Exposed for tests.
std::vector<std::pair<std::string, std::string>> merges_from_vocab(const std::vector<std::string>& tokens,
                                                                   const std::vector<double>* scores);

}  // namespace anvil::gguf
