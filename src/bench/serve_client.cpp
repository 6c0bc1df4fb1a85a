// The online load generator. A dispatcher thread releases requests at their arrival times into a
// queue; workers (one per request in flight, grown on demand, capped by --concurrency) stream
// them. Workers reuse one keep-alive connection each. All state a worker writes is its own record.
#include "bench/serve_client.h"

#include <httplib.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "bench/sse.h"
#include "bench/stats.h"
#include "bench/workload.h"

namespace anvil::bench {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double since(Clock::time_point t0, Clock::time_point t) { return std::chrono::duration<double>(t - t0).count(); }

Clock::duration seconds_to_duration(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

void set_timeout(httplib::Client& cli, double seconds, bool read) {
  seconds = std::max(seconds, 0.001);
  const time_t sec = static_cast<time_t>(seconds);
  const time_t usec = static_cast<time_t>((seconds - static_cast<double>(sec)) * 1e6);
  if (read) {
    cli.set_read_timeout(sec, usec);
    cli.set_write_timeout(sec, usec);
  } else {
    cli.set_connection_timeout(sec, usec);
  }
}

// The model id to send: --model, else the first of GET /v1/models, else none.
std::string resolve_model(const ServeConfig& c, const ParsedUrl& u) {
  if (!c.model.empty()) return c.model;
  httplib::Client cli(u.scheme_host_port);
  set_timeout(cli, c.connect_timeout_s, false);
  set_timeout(cli, c.connect_timeout_s, true);
  httplib::Headers h;
  if (!c.api_key.empty()) h.emplace("Authorization", "Bearer " + c.api_key);
  auto res = cli.Get(u.base_path + "/v1/models", h);
  if (!res || res->status != 200) return "";
  json j = json::parse(res->body, nullptr, false);
  if (j.is_discarded() || !j.contains("data") || !j["data"].is_array() || j["data"].empty()) return "";
  const json& first = j["data"][0];
  if (!first.is_object() || !first.contains("id") || !first["id"].is_string()) return "";
  return first["id"].get<std::string>();
}

struct Work {
  json body;
  int64_t fallback_prompt_tokens = 0;
};

// Streams one request; fills `r` (times relative to t0).
void stream_one(httplib::Client& cli, const ServeConfig& c, const ParsedUrl& u, const Work& w, Clock::time_point t0,
                Clock::time_point run_deadline, StreamRecord* r) {
  const auto send = Clock::now();
  r->sent = true;
  r->send_s = since(t0, send);
  r->prompt_tokens = w.fallback_prompt_tokens;
  const auto deadline = std::min(run_deadline, send + seconds_to_duration(c.request_timeout_s));
  set_timeout(cli, std::chrono::duration<double>(deadline - send).count(), true);

  int status = -1;
  std::string error_body;
  SseParser sse;
  bool done = false, deadline_hit = false;
  int64_t counted_tokens = 0;
  int64_t usage_completion = -1, usage_prompt = -1;
  Clock::time_point last_chunk{};
  bool have_chunk = false;
  std::string stream_error;

  httplib::Request req;
  req.method = "POST";
  req.path = u.base_path + "/v1/completions";
  req.set_header("Content-Type", "application/json");
  req.set_header("Accept", "text/event-stream");
  if (!c.api_key.empty()) req.set_header("Authorization", "Bearer " + c.api_key);
  req.body = w.body.dump();
  req.response_handler = [&](const httplib::Response& res) {
    status = res.status;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    const auto now = Clock::now();
    if (now > deadline) {
      deadline_hit = true;
      return false;
    }
    if (status != 200) {
      if (error_body.size() < 2000) error_body.append(data, std::min<size_t>(n, 2000 - error_body.size()));
      return true;
    }
    for (const std::string& ev : sse.feed(std::string_view(data, n))) {
      if (ev == "[DONE]") {
        done = true;
        continue;
      }
      json j = json::parse(ev, nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        if (stream_error.empty()) stream_error = "unparsable stream event: " + ev.substr(0, 200);
        continue;
      }
      if (j.contains("error")) {
        if (stream_error.empty()) stream_error = "error event: " + j["error"].dump().substr(0, 500);
        continue;
      }
      if (j.contains("usage") && j["usage"].is_object()) {
        const json& us = j["usage"];
        if (us.contains("completion_tokens") && us["completion_tokens"].is_number_integer()) usage_completion = us["completion_tokens"].get<int64_t>();
        if (us.contains("prompt_tokens") && us["prompt_tokens"].is_number_integer()) usage_prompt = us["prompt_tokens"].get<int64_t>();
      }
      if (!j.contains("choices") || !j["choices"].is_array()) continue;
      int64_t tokens = 0;
      for (const json& ch : j["choices"]) {
        if (!ch.is_object()) continue;
        if (ch.contains("token_ids") && ch["token_ids"].is_array() && !ch["token_ids"].empty()) {
          tokens += static_cast<int64_t>(ch["token_ids"].size());
        } else if (ch.contains("text") && ch["text"].is_string() &&
                   (!ch["text"].get_ref<const std::string&>().empty() || !ch.contains("finish_reason") ||
                    ch["finish_reason"].is_null())) {
          // One chunk per token, as OpenAI-compatible servers stream; an empty text without a
          // finish_reason is a token whose text is still pending (split UTF-8, no tokenizer).
          tokens += 1;
        }
      }
      if (tokens == 0) continue;
      counted_tokens += tokens;
      if (!have_chunk) {
        r->ttft_s = std::chrono::duration<double>(now - send).count();
      } else {
        r->itl_s.push_back(std::chrono::duration<double>(now - last_chunk).count());
      }
      last_chunk = now;
      have_chunk = true;
    }
    return true;
  };
  httplib::Result res = cli.send(req);
  const auto end = Clock::now();
  r->e2e_s = std::chrono::duration<double>(end - send).count();
  r->output_tokens = usage_completion >= 0 ? usage_completion : counted_tokens;
  if (usage_prompt >= 0) r->prompt_tokens = usage_prompt;
  if (deadline_hit || (!res && end >= deadline)) {
    r->error = "timed out after " + std::to_string(std::chrono::duration<double>(end - send).count()) + " s";
  } else if (!res) {
    r->error = "connection failed (" + httplib::to_string(res.error()) + ")";
  } else if (status != 200) {
    r->error = "HTTP " + std::to_string(status) + ": " + error_body.substr(0, 500);
  } else if (!stream_error.empty()) {
    r->error = stream_error;
  } else if (!done) {
    r->error = "stream ended without [DONE]";
  } else if (!have_chunk) {
    r->error = "stream carried no tokens";
  }
}

// Hands request indexes to workers; grows the pool while all workers are busy, up to `max_workers`.
class WorkerPool {
 public:
  WorkerPool(size_t max_workers, std::function<void(size_t worker, size_t item)> fn)
      : max_workers_(max_workers), fn_(std::move(fn)) {}
  ~WorkerPool() { close_and_join(); }

  // Queues `item`; blocks while `max_workers` are busy and the queue is non-empty, so a bounded
  // pool keeps later items waiting to be sent (their clocks start when sent), up to `deadline`.
  bool push(size_t item, Clock::time_point deadline) {
    std::unique_lock<std::mutex> lk(mu_);
    if (!cv_space_.wait_until(lk, deadline, [&] { return busy_ < max_workers_; })) return false;
    queue_.push_back(item);
    ++busy_;
    // Every queued item needs an idle worker of its own, or it would wait behind a running one.
    if (queue_.size() > idle_ && workers_.size() < max_workers_) {
      const size_t id = workers_.size();
      workers_.emplace_back([this, id] { loop(id); });
    } else {
      cv_work_.notify_one();
    }
    return true;
  }

  void close_and_join() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      closing_ = true;
    }
    cv_work_.notify_all();
    for (std::thread& t : workers_) {
      if (t.joinable()) t.join();
    }
  }

  size_t num_workers() const { return workers_.size(); }

 private:
  void loop(size_t id) {
    std::unique_lock<std::mutex> lk(mu_);
    while (true) {
      ++idle_;
      cv_work_.wait(lk, [&] { return !queue_.empty() || closing_; });
      --idle_;
      if (queue_.empty()) return;  // closing
      const size_t item = queue_.front();
      queue_.pop_front();
      lk.unlock();
      fn_(id, item);
      lk.lock();
      --busy_;
      cv_space_.notify_all();
    }
  }

  const size_t max_workers_;
  std::function<void(size_t, size_t)> fn_;
  std::mutex mu_;
  std::condition_variable cv_work_, cv_space_;
  std::deque<size_t> queue_;
  std::vector<std::thread> workers_;
  size_t busy_ = 0;  // queued or running
  size_t idle_ = 0;
  bool closing_ = false;
};

std::string ms_cell(double v) { return format("%.2f", v); }

}  // namespace

Result<ParsedUrl> parse_url(const std::string& url) {
  std::string rest = url;
  std::string scheme = "http";
  const size_t sep = rest.find("://");
  if (sep != std::string::npos) {
    scheme = rest.substr(0, sep);
    rest = rest.substr(sep + 3);
  }
  if (scheme != "http" && scheme != "https") return invalid_argument("--url '" + url + "': scheme must be http or https");
  const size_t slash = rest.find('/');
  std::string host_port = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "" : rest.substr(slash);
  while (!path.empty() && path.back() == '/') path.pop_back();
  if (path.size() >= 3 && path.compare(path.size() - 3, 3, "/v1") == 0) path.resize(path.size() - 3);
  if (host_port.empty()) return invalid_argument("--url '" + url + "': no host");
  const size_t colon = host_port.rfind(':');
  if (colon != std::string::npos && host_port.find(']') == std::string::npos) {
    const std::string port = host_port.substr(colon + 1);
    if (port.empty() || port.find_first_not_of("0123456789") != std::string::npos || port.size() > 5 || std::stoi(port) > 65535) {
      return invalid_argument("--url '" + url + "': bad port '" + port + "'");
    }
  }
  return ParsedUrl{scheme + "://" + host_port, path};
}

Result<ServeOutput> run_serve(const ServeConfig& c) {
  if (c.num_requests < 1) return invalid_argument("--num-requests must be at least 1");
  if (c.osl < 1) return invalid_argument("--osl must be at least 1");
  if (c.dataset.empty() && c.isl < 1) return invalid_argument("--isl must be at least 1");
  if (c.vocab_size < 1) return invalid_argument("--vocab-size must be at least 1");
  if (c.rate < 0) return invalid_argument("--rate must not be negative (0 = all at once)");
  if (c.concurrency < 0) return invalid_argument("--concurrency must not be negative (0 = unbounded)");
  if (!(c.request_timeout_s > 0)) return invalid_argument("--request-timeout must be positive");
  ANVIL_ASSIGN_OR_RETURN(ParsedUrl u, parse_url(c.url));
  {
    httplib::Client probe(u.scheme_host_port);
    if (!probe.is_valid()) return invalid_argument("--url '" + c.url + "' is not a usable address");
  }
  const std::string model = resolve_model(c, u);

  // Bodies first, so building them never delays an arrival.
  const size_t n = static_cast<size_t>(c.num_requests);
  std::vector<Work> work(n);
  std::vector<DatasetPrompt> prompts;
  if (!c.dataset.empty()) {
    ANVIL_ASSIGN_OR_RETURN(std::vector<DatasetPrompt> all, load_dataset_jsonl(c.dataset));
    prompts = sample_dataset(all, c.num_requests, c.seed);
  }
  for (size_t i = 0; i < n; ++i) {
    json b{{"max_tokens", c.osl}, {"stream", true}, {"ignore_eos", true}, {"temperature", 0.0},
           {"stream_options", {{"include_usage", true}}}};
    if (!model.empty()) b["model"] = model;
    if (c.return_token_ids) b["return_token_ids"] = true;
    if (prompts.empty()) {
      b["prompt"] = synthetic_prompt(c.seed, i, c.isl, 0, c.vocab_size);
      work[i].fallback_prompt_tokens = c.isl;
    } else {
      b["prompt"] = prompts[i].text;
      if (prompts[i].output_len > 0) b["max_tokens"] = prompts[i].output_len;
    }
    work[i].body = std::move(b);
  }
  const std::vector<double> arrivals = arrival_times(c.num_requests, c.rate, c.seed);

  std::vector<StreamRecord> records(n);
  const size_t max_workers = c.concurrency > 0 ? static_cast<size_t>(std::min<int64_t>(c.concurrency, c.num_requests)) : n;
  std::vector<std::unique_ptr<httplib::Client>> clients(max_workers);
  const auto t0 = Clock::now();
  const auto run_deadline = t0 + seconds_to_duration(c.max_duration_s);
  {
    WorkerPool pool(max_workers, [&](size_t worker, size_t i) {
      if (Clock::now() >= run_deadline) return;  // past --max-duration: counted as not sent
      if (!clients[worker]) {
        clients[worker] = std::make_unique<httplib::Client>(u.scheme_host_port);
        clients[worker]->set_keep_alive(true);
        // Without it, Nagle holds the request body until the headers' (delayed) ACK: +40 ms TTFT.
        clients[worker]->set_tcp_nodelay(true);
        set_timeout(*clients[worker], c.connect_timeout_s, false);
      }
      stream_one(*clients[worker], c, u, work[i], t0, run_deadline, &records[i]);
    });
    for (size_t i = 0; i < n; ++i) {
      const auto at = t0 + seconds_to_duration(arrivals[i]);
      if (at >= run_deadline) break;
      std::this_thread::sleep_until(at);
      if (!pool.push(i, run_deadline)) break;
    }
    pool.close_and_join();
  }

  // Aggregate.
  int64_t completed = 0, errors = 0, not_sent = 0, good = 0, out_tokens = 0, in_tokens = 0;
  std::vector<double> ttft, itl, tpot, e2e;
  double first_send = -1, last_end = 0;
  json error_list = json::array();
  json per_request = json::array();
  for (const StreamRecord& r : records) {
    if (!r.sent) {
      ++not_sent;
      per_request.push_back({{"sent", false}});
      continue;
    }
    if (first_send < 0 || r.send_s < first_send) first_send = r.send_s;
    last_end = std::max(last_end, r.send_s + r.e2e_s);
    const double r_tpot = r.output_tokens > 1 && r.ttft_s >= 0 ? (r.e2e_s - r.ttft_s) / static_cast<double>(r.output_tokens - 1) : 0.0;
    json pr{{"sent", true}, {"send_s", r.send_s}, {"ttft_ms", r.ttft_s * 1e3}, {"e2e_ms", r.e2e_s * 1e3},
            {"tpot_ms", r_tpot * 1e3}, {"prompt_tokens", r.prompt_tokens}, {"output_tokens", r.output_tokens},
            {"ok", r.ok()}};
    if (!r.ok()) {
      ++errors;
      pr["error"] = r.error;
      if (error_list.size() < 10) error_list.push_back(r.error);
      per_request.push_back(pr);
      continue;
    }
    per_request.push_back(pr);
    ++completed;
    out_tokens += r.output_tokens;
    in_tokens += r.prompt_tokens;
    ttft.push_back(r.ttft_s);
    e2e.push_back(r.e2e_s);
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
    if (r.output_tokens > 1) tpot.push_back(r_tpot);
    const bool ttft_ok = c.slo_ttft_ms <= 0 || r.ttft_s * 1e3 <= c.slo_ttft_ms;
    const bool itl_ok = c.slo_itl_ms <= 0 || r_tpot * 1e3 <= c.slo_itl_ms;
    good += ttft_ok && itl_ok;
  }
  const double dur = first_send >= 0 ? last_end - first_send : 0.0;
  auto per_s = [&](double v) { return dur > 0 ? v / dur : 0.0; };
  const Summary s_ttft = summarize(ttft), s_itl = summarize(itl), s_tpot = summarize(tpot), s_e2e = summarize(e2e);

  ServeOutput out;
  out.doc = {{"schema", kSchema}, {"mode", "serve"}, {"engine", "http"}, {"meta", run_meta()}, {"url", c.url},
             {"model", model}};
  out.doc["config"] = {{"rate", c.rate > 0 ? json(c.rate) : json("inf")},
                       {"concurrency", c.concurrency},
                       {"num_requests", c.num_requests},
                       {"isl", prompts.empty() ? json(c.isl) : json(nullptr)},
                       {"osl", c.osl},
                       {"dataset", c.dataset},
                       {"seed", c.seed},
                       {"slo_ttft_ms", c.slo_ttft_ms},
                       {"slo_itl_ms", c.slo_itl_ms},
                       {"request_timeout_s", c.request_timeout_s}};
  out.doc["results"] = {
      {"duration_s", dur},
      {"num_requests_completed", completed},
      {"num_errors", errors},
      {"num_not_sent", not_sent},
      {"num_prompt_tokens", in_tokens},
      {"num_output_tokens", out_tokens},
      {"requests_per_s", per_s(static_cast<double>(completed))},
      {"output_tok_s", per_s(static_cast<double>(out_tokens))},
      {"total_tok_s", per_s(static_cast<double>(in_tokens + out_tokens))},
      {"ttft_ms", summary_json(s_ttft, 1e3)},
      {"itl_ms", summary_json(s_itl, 1e3)},
      {"tpot_ms", summary_json(s_tpot, 1e3)},
      {"e2e_ms", summary_json(s_e2e, 1e3)},
      {"num_good", good},
      {"goodput_req_s", per_s(static_cast<double>(good))},
      {"goodput_fraction", completed + errors > 0 ? static_cast<double>(good) / static_cast<double>(completed + errors) : 0.0},
      {"peak_workers", max_workers},
  };
  out.doc["errors"] = error_list;
  out.doc["requests"] = per_request;
  json itl_ms = json::array();
  for (double v : itl) itl_ms.push_back(std::round(v * 1e6) / 1e3);  // microsecond resolution, in ms
  out.doc["itl_ms_samples"] = itl_ms;

  out.table = Table({"serve (ms)", "mean", "p50", "p90", "p99"});
  for (const auto& [name, s] : {std::pair<const char*, const Summary&>{"TTFT", s_ttft}, {"ITL", s_itl},
                                {"TPOT", s_tpot}, {"end-to-end", s_e2e}}) {
    out.table.add_row({name, ms_cell(s.mean * 1e3), ms_cell(s.p50 * 1e3), ms_cell(s.p90 * 1e3), ms_cell(s.p99 * 1e3)});
  }
  out.table.add_row({"requests ok / errors / not sent", format("%lld / %lld / %lld", static_cast<long long>(completed),
                                                               static_cast<long long>(errors), static_cast<long long>(not_sent))});
  out.table.add_row({"duration s", format("%.3f", dur)});
  out.table.add_row({"requests/s", format("%.3f", per_s(static_cast<double>(completed)))});
  out.table.add_row({"output tok/s", format("%.1f", per_s(static_cast<double>(out_tokens)))});
  out.table.add_row({"total tok/s", format("%.1f", per_s(static_cast<double>(in_tokens + out_tokens)))});
  if (c.slo_ttft_ms > 0 || c.slo_itl_ms > 0) {
    out.table.add_row({format("goodput (TTFT<=%g, TPOT<=%g) req/s", c.slo_ttft_ms, c.slo_itl_ms),
                       format("%.3f (%lld good)", per_s(static_cast<double>(good)), static_cast<long long>(good))});
  }
  out.records = std::move(records);
  return out;
}

}  // namespace anvil::bench
