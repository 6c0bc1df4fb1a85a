// `anvil tokenize` end to end: JSON lines in order, error lines naming the line number, exit
// codes. Skips when the anvil binary has not been built in this build folder.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tokenizer_test_util.h"

namespace anvil::test {
namespace {

struct CliResult {
  int exit_code;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

CliResult run_cli(const std::string& args, const std::string& input) {
  const std::string base = std::string(ANVIL_BINARY_DIR) + "/test_data/cli_" + std::to_string(::getpid());
  { std::ofstream(base + ".in", std::ios::binary) << input; }
  std::string cmd = std::string(ANVIL_BINARY_DIR) + "/bin/anvil tokenize " + args + " < " + base + ".in > " + base +
                    ".out 2> " + base + ".err";
  int rc = std::system(cmd.c_str());
  CliResult r{WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(base + ".out"), slurp(base + ".err")};
  for (const char* ext : {".in", ".out", ".err"}) std::remove((base + ext).c_str());
  return r;
}

class TokenizeCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(std::string(ANVIL_BINARY_DIR) + "/bin/anvil")) GTEST_SKIP() << "anvil binary not built";
    tok_ = shared_tokenizer("qwen3");
    ASSERT_NE(tok_, nullptr);
    dir_ = tokenizer_dir("qwen3");
  }
  const Tokenizer* tok_ = nullptr;
  std::string dir_;
};

TEST_F(TokenizeCli, EncodesLinesInOrderAndReportsBadLines) {
  const std::string input =
      "{\"text\": \"Hello world\"}\n"
      "{\"text\": \"<|im_start|>user\\n你好 👍\"}\n"
      "this is not json\n"
      "{\"ids\": [1]}\n"
      "{\"text\": \"last\"}\n";
  CliResult r = run_cli("--model " + dir_, input);
  EXPECT_EQ(r.exit_code, 1);
  std::istringstream lines(r.out);
  std::string line;
  std::vector<std::vector<int32_t>> got;
  while (std::getline(lines, line)) got.push_back(nlohmann::json::parse(line)["ids"].get<std::vector<int32_t>>());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], tok_->encode("Hello world"));
  EXPECT_EQ(got[1], tok_->encode("<|im_start|>user\n你好 👍"));
  EXPECT_EQ(got[2], tok_->encode("last"));
  EXPECT_NE(r.err.find("line 3:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("line 4:"), std::string::npos) << r.err;
}

TEST_F(TokenizeCli, DecodesIdsAndSkipsSpecialWithNoSpecial) {
  auto ids = tok_->encode("<|im_start|>assistant\nSure: 42 ✓<|im_end|>");
  const std::string input = nlohmann::json{{"ids", ids}}.dump() + "\n";
  CliResult plain = run_cli("--model " + dir_ + " --decode", input);
  EXPECT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(nlohmann::json::parse(plain.out)["text"], tok_->decode(ids, false));
  CliResult skip = run_cli("--model " + dir_ + " --decode --no-special", input);
  EXPECT_EQ(skip.exit_code, 0) << skip.err;
  EXPECT_EQ(nlohmann::json::parse(skip.out)["text"], "assistant\nSure: 42 ✓");
}

TEST_F(TokenizeCli, MissingModelFails) {
  CliResult r = run_cli("--model /nonexistent/model", "{\"text\": \"x\"}\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("/nonexistent/model"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace anvil::test
