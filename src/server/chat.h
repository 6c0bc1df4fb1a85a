// Chat messages -> prompt text through the model's chat template (tokenizer_config.json's
// "chat_template" or --chat-template). Messages are validated first: each an object with a
// known role and string content, or a list of {"type": "text"} parts (joined); other part types
// (images, audio) are refused with a 400 naming the message.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "server/json_params.h"
#include "server/server_options.h"

namespace anvil::server {

// Reads body["messages"] (and "tools", "add_generation_prompt", "chat_template_kwargs") and renders
// them. 400 when the model has no chat template or the template fails on these messages.
MaybeError render_chat_prompt(const RequestJson& body, const ServingModel& model, std::string* prompt);

}  // namespace anvil::server
