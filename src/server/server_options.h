// What the HTTP server serves (ServingModel: an executor plus the optional tokenizer and chat
// template) and how (ServerOptions: address, key, request limits). The server never owns the
// model: whoever calls HttpServer::set_model keeps it alive until HttpServer::stop returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "anvil/executor.h"
#include "tokenizer/tokenizer.h"

namespace anvil {
class ChatTemplate;
}

namespace anvil::server {

struct ServingModel {
  std::string name;                            // the id clients pass as "model"
  Executor* executor = nullptr;
  const Tokenizer* tokenizer = nullptr;        // null: prompts and outputs are token ids only
  const ChatTemplate* chat_template = nullptr; // null: /v1/chat/completions answers 400
  int64_t created = 0;                         // unix seconds when the model became ready
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;            // 0: any free port (see HttpServer::port)
  std::string api_key;        // empty: no authentication
  size_t max_body_bytes = 16u << 20;
  int32_t max_n = 16;         // choices per prompt
  int32_t max_stop = 16;      // stop strings per request
  int32_t max_stop_len = 512; // bytes per stop string
  int32_t max_prompts = 64;   // prompts in one /v1/completions batch
  int32_t max_sequences = 256;// prompts * n
  int32_t max_stop_token_ids = 256;
  // One per open connection (a stream holds its thread until done); more connections wait for a
  // free thread. 0: 256.
  int32_t http_threads = 0;
  double health_stall_seconds = 60.0;  // /health is 503 when pending work saw no step this long
};

}  // namespace anvil::server
