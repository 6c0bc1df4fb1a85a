// Raw HTTP/1.1 over a socket for the corpus and stress tests: exact request bytes (any method,
// content type, or a lying Content-Length), a response parser for Content-Length and chunked
// bodies that says whether the response arrived whole, and an OpenAI error-object check.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace anvil::server::test {

struct RawResponse {
  int status = 0;                              // 0: no status line received
  std::map<std::string, std::string> headers;  // keys lowercased
  std::string body;                            // de-chunked
  bool complete = false;                       // the whole body arrived (Content-Length met / last chunk)
};

// One request's bytes. An empty content_type sends no Content-Type header; content_length < 0
// sends the true length.
inline std::string http_request_bytes(const std::string& method, const std::string& path, const std::string& body,
                                      const std::string& content_type = "application/json",
                                      long content_length = -1, bool close = true) {
  std::string r = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  if (close) r += "Connection: close\r\n";
  if (!content_type.empty()) r += "Content-Type: " + content_type + "\r\n";
  if (method != "GET" || !body.empty()) {
    r += "Content-Length: " + std::to_string(content_length < 0 ? static_cast<long>(body.size()) : content_length) +
         "\r\n";
  }
  return r + "\r\n" + body;
}

// Parses what was received so far. Returns false on bytes that are not an HTTP response.
inline bool parse_http_response(const std::string& bytes, RawResponse* out) {
  *out = RawResponse{};
  const size_t head_end = bytes.find("\r\n\r\n");
  if (head_end == std::string::npos) return bytes.empty() || bytes.rfind("HTTP/1.", 0) == 0 || bytes.size() < 7;
  if (bytes.rfind("HTTP/1.", 0) != 0 || bytes.size() < 12) return false;
  out->status = std::atoi(bytes.c_str() + 9);
  size_t pos = bytes.find("\r\n") + 2;
  while (pos < head_end) {
    size_t eol = bytes.find("\r\n", pos);
    std::string line = bytes.substr(pos, eol - pos);
    pos = eol + 2;
    size_t colon = line.find(':');
    if (colon == std::string::npos) return false;
    std::string key = line.substr(0, colon);
    std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return std::tolower(c); });
    size_t v = line.find_first_not_of(' ', colon + 1);
    out->headers[key] = v == std::string::npos ? "" : line.substr(v);
  }
  pos = head_end + 4;
  auto te = out->headers.find("transfer-encoding");
  if (te != out->headers.end() && te->second == "chunked") {
    for (;;) {
      size_t eol = bytes.find("\r\n", pos);
      if (eol == std::string::npos) return true;  // incomplete
      const std::string size_hex = bytes.substr(pos, eol - pos);
      char* end = nullptr;
      const unsigned long size = std::strtoul(size_hex.c_str(), &end, 16);
      if (size_hex.empty() || end == size_hex.c_str()) return false;
      if (size == 0) {
        out->complete = bytes.find("\r\n", eol + 2) != std::string::npos;
        return true;
      }
      if (bytes.size() < eol + 2 + size + 2) return true;  // incomplete
      out->body.append(bytes, eol + 2, size);
      if (bytes.compare(eol + 2 + size, 2, "\r\n") != 0) return false;
      pos = eol + 2 + size + 2;
    }
  }
  auto cl = out->headers.find("content-length");
  const size_t want = cl == out->headers.end() ? 0 : std::stoul(cl->second);
  out->body = bytes.substr(pos, want);
  out->complete = bytes.size() - pos >= want;
  return true;
}

inline int connect_loopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends `request` (ignoring a failed send: the server may answer before reading an oversize
// body) and reads until the server closes or `timeout` passes.
inline RawResponse raw_exchange(int port, const std::string& request,
                                std::chrono::milliseconds timeout = std::chrono::milliseconds(20000)) {
  RawResponse resp;
  int fd = connect_loopback(port);
  if (fd < 0) return resp;
  size_t off = 0;
  while (off < request.size()) {
    ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  std::string in;
  char buf[8192];
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    in.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  parse_http_response(in, &resp);
  return resp;
}

// Empty when `body` is OpenAI's error object {"error": {"message", "type", "param", "code"}}
// (message a non-empty string, type a string, param and code strings or null); else what is wrong.
inline std::string openai_error_shape_problem(const nlohmann::json& body) {
  if (!body.is_object() || !body.contains("error") || !body["error"].is_object()) return "no 'error' object";
  const auto& e = body["error"];
  if (!e.contains("message") || !e["message"].is_string() || e["message"].get<std::string>().empty()) {
    return "'message' is not a non-empty string";
  }
  if (!e.contains("type") || !e["type"].is_string()) return "'type' is not a string";
  for (const char* k : {"param", "code"}) {
    if (!e.contains(k) || !(e[k].is_string() || e[k].is_null())) return std::string("'") + k + "' is not string/null";
  }
  return "";
}

}  // namespace anvil::server::test
