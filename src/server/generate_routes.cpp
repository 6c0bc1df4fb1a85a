// POST /v1/completions and /v1/chat/completions. Non-streaming: the handler thread waits for
// every choice and answers once. Streaming: Server-Sent Events, one `data: {chunk}\n\n` per
// delta, then the optional usage chunk and `data: [DONE]\n\n`; a failed write (the client hung
// up) cancels the request's sequences so their KV blocks are freed at the next step.
#include <chrono>

#include "server/generate_job.h"
#include "server/server_state.h"

namespace anvil::server {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr auto kPollInterval = 50ms;
constexpr auto kKeepAliveInterval = 10s;

bool write_event(httplib::DataSink& sink, const json& chunk) {
  std::string line = "data: " + dump_json(chunk) + "\n\n";
  return sink.write(line.data(), line.size());
}

bool write_raw(httplib::DataSink& sink, const std::string& s) { return sink.write(s.data(), s.size()); }

// Per-stream state kept between calls of the chunked content provider.
struct StreamState {
  std::shared_ptr<GenerateJob> job;
  bool opened = false;
  std::vector<size_t> text_offset;  // completions: characters of text sent per choice (for logprobs)
  Clock::time_point last_write = Clock::now();
};

// The first events of a stream: chat role chunks, or the echoed prompts of completions.
bool open_stream(StreamState& st, httplib::DataSink& sink) {
  const GenerateJob& job = *st.job;
  const ResponseContext& ctx = job.context();
  const GenerateRequest& r = job.request();
  const bool usage_null = r.include_usage;
  for (size_t i = 0; i < job.num_sequences(); ++i) {
    json chunk;
    if (ctx.kind == ApiKind::kChat) {
      chunk = chat_role_chunk(ctx, static_cast<int>(i));
    } else if (r.echo) {
      ChoiceDelta echo;
      echo.text = r.prompts[i / static_cast<size_t>(r.n)].text;
      st.text_offset[i] = utf8_num_chars(echo.text);
      chunk = completion_chunk(ctx, static_cast<int>(i), echo, 0, "");
    } else {
      continue;
    }
    if (usage_null) chunk["usage"] = nullptr;
    if (!write_event(sink, chunk)) return false;
  }
  return true;
}

bool write_deltas(StreamState& st, std::vector<IndexedDelta>& deltas, httplib::DataSink& sink) {
  const ResponseContext& ctx = st.job->context();
  const bool usage_null = st.job->request().include_usage;
  for (IndexedDelta& d : deltas) {
    const int index = static_cast<int>(d.seq);
    if (d.delta.finish_reason == "error") {
      json err = ApiError{500, "generation failed: " + d.delta.error, "", "", "server_error"}.to_json();
      if (!write_event(sink, err)) return false;
      continue;
    }
    // A delta whose text is still held back (an unfinished character or a possible stop string)
    // is sent only if it carries something the client asked for.
    const bool worth_sending = !d.delta.text.empty() || (ctx.return_token_ids && !d.delta.token_ids.empty()) ||
                               (ctx.want_logprobs && !d.delta.logprobs.empty());
    std::vector<json> chunks;
    if (ctx.kind == ApiKind::kChat) {
      if (worth_sending) chunks.push_back(chat_chunk(ctx, index, d.delta, ""));
      if (d.delta.finished) chunks.push_back(chat_chunk(ctx, index, ChoiceDelta{}, d.delta.finish_reason));
    } else if (worth_sending || d.delta.finished) {
      chunks.push_back(completion_chunk(ctx, index, d.delta, st.text_offset[d.seq],
                                        d.delta.finished ? d.delta.finish_reason : ""));
      st.text_offset[d.seq] += utf8_num_chars(d.delta.text);
    }
    for (json& c : chunks) {
      if (usage_null) c["usage"] = nullptr;
      if (!write_event(sink, c)) return false;
    }
  }
  return true;
}

void respond_whole(ServerState& s, GenerateJob& job, httplib::Response& res) {
  const size_t total = job.num_sequences();
  std::vector<ChoiceResult> results(total);
  while (!job.all_finished()) {
    if (s.stopping) {
      job.abort();
      return send_error(res, ApiError{503, "the server is shutting down", "", "shutting_down", "server_error"});
    }
    for (IndexedDelta& d : job.pump(kPollInterval)) {
      ChoiceResult& r = results[d.seq];
      r.text += d.delta.text;
      r.token_ids.insert(r.token_ids.end(), d.delta.token_ids.begin(), d.delta.token_ids.end());
      for (auto& e : d.delta.logprobs) r.logprobs.push_back(std::move(e));
      if (d.delta.finished) {
        r.finish_reason = d.delta.finish_reason;
        if (r.finish_reason == "error") {
          job.abort();
          return send_error(res, ApiError{500, "generation failed: " + d.delta.error, "", "", "server_error"});
        }
      }
    }
  }
  const GenerateRequest& req = job.request();
  json body;
  if (req.kind == ApiKind::kChat) {
    body = chat_response(job.context(), results, job.usage());
  } else {
    std::vector<std::string> prefixes;
    if (req.echo) {
      for (size_t i = 0; i < total; ++i) prefixes.push_back(req.prompts[i / static_cast<size_t>(req.n)].text);
    }
    body = completion_response(job.context(), results, prefixes, job.usage());
  }
  res.status = 200;
  res.set_content(dump_json(body), "application/json");
}

}  // namespace

void handle_completions(ServerState& s, const httplib::Request& req, httplib::Response& res, bool chat) {
  const Clock::time_point arrival = Clock::now();
  auto model = ready_model(s, res);
  if (model == nullptr) return;
  RequestJson body;
  if (auto e = parse_json_body(req, &body)) return send_error(res, *e);
  GenerateRequest greq;
  if (auto e = parse_generate_request(body, chat ? ApiKind::kChat : ApiKind::kCompletion, *model, s.options, &greq)) {
    return send_error(res, *e);
  }
  auto job = std::make_shared<GenerateJob>(model, std::move(greq), &s.metrics, arrival);
  if (auto e = job->start()) return send_error(res, *e);

  if (!job->request().stream) return respond_whole(s, *job, res);

  auto st = std::make_shared<StreamState>();
  st->job = job;
  st->text_offset.assign(job->num_sequences(), 0);
  ServerState* sp = &s;
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [st, sp](size_t, httplib::DataSink& sink) {
        GenerateJob& j = *st->job;
        if (!st->opened) {
          st->opened = true;
          if (!open_stream(*st, sink)) {
            j.abort();
            return false;
          }
        }
        if (sp->stopping) {
          j.abort();
          return false;
        }
        std::vector<IndexedDelta> deltas = j.pump(kPollInterval);
        if (!deltas.empty()) {
          if (!write_deltas(*st, deltas, sink)) {
            j.abort();
            return false;
          }
          st->last_write = Clock::now();
        } else if (Clock::now() - st->last_write > kKeepAliveInterval) {
          // An SSE comment: clients ignore it; a write to a closed socket tells us the client left.
          if (!write_raw(sink, ": keep-alive\n\n")) {
            j.abort();
            return false;
          }
          st->last_write = Clock::now();
        }
        if (j.all_finished()) {
          if (j.request().include_usage && !write_event(sink, usage_chunk(j.context(), j.usage()))) return false;
          if (!write_raw(sink, "data: [DONE]\n\n")) return false;
          sink.done();
        }
        return true;
      },
      [st](bool success) {
        if (!success) st->job->abort();
      });
}

}  // namespace anvil::server
