// Text tables and JSON output for `anvil bench`.
#include "bench/report.h"

#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdlib>
#include <ctime>
#include <fstream>

namespace anvil::bench {

std::string Table::render() const {
  size_t cols = header_.size();
  for (const auto& r : rows_) cols = std::max(cols, r.size());
  std::vector<size_t> width(cols, 0);
  auto cell = [](const std::vector<std::string>& r, size_t i) -> const std::string& {
    static const std::string kEmpty;
    return i < r.size() ? r[i] : kEmpty;
  };
  for (size_t i = 0; i < cols; ++i) {
    width[i] = cell(header_, i).size();
    for (const auto& r : rows_) width[i] = std::max(width[i], cell(r, i).size());
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& r) {
    std::string l;
    for (size_t i = 0; i < cols; ++i) {
      const std::string& c = cell(r, i);
      const std::string pad(width[i] - c.size(), ' ');
      if (i) l += "  ";
      l += i == 0 ? c + pad : pad + c;
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l + "\n";
  };
  line(header_);
  size_t total = 0;
  for (size_t i = 0; i < cols; ++i) total += width[i] + (i ? 2 : 0);
  out += std::string(total, '-') + "\n";
  for (const auto& r : rows_) line(r);
  return out;
}

void Table::print(FILE* f) const {
  const std::string s = render();
  std::fwrite(s.data(), 1, s.size(), f);
  std::fflush(f);
}

std::string format(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list ap2;
  va_copy(ap2, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, ap);
  va_end(ap);
  std::string s(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(s.data(), s.size() + 1, fmt, ap2);
  va_end(ap2);
  return s;
}

nlohmann::json run_meta() {
  char date[32] = {0};
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  const char* commit = std::getenv("ANVIL_COMMIT");
#ifdef ANVIL_VERSION
  const char* version = ANVIL_VERSION;
#else
  const char* version = "";
#endif
  return {{"date", date}, {"anvil_version", version}, {"commit", commit ? commit : ""}, {"host", host}};
}

Status write_json(const std::string& path, const nlohmann::json& doc) {
  const std::string text = doc.dump(2) + "\n";
  if (path == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return Status::ok();
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return invalid_argument("--json: cannot open '" + path + "' for writing");
  out << text;
  out.close();
  if (!out) return invalid_argument("--json: writing '" + path + "' failed");
  return Status::ok();
}

}  // namespace anvil::bench
