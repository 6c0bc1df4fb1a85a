// Renders every conversation of tests/data/chat_templates/reference.json (made by
// tools/chat_template/make_reference.py with HF transformers) and compares byte for byte; cases
// the template rejects must fail with HF's message.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "core/mmap_file.h"
#include "tokenizer/chat_template.h"

namespace anvil {
namespace {

using OJson = nlohmann::ordered_json;

const std::string kDataDir = std::string(ANVIL_SOURCE_DIR) + "/tests/data/chat_templates/";

OJson load_reference() {
  Result<std::string> text = read_file(kDataDir + "reference.json");
  EXPECT_TRUE(text.is_ok()) << text.status().to_string();
  if (!text.is_ok()) return OJson();
  return OJson::parse(*text);
}

// Where two renderings first differ, with context, for a readable failure.
std::string first_difference(const std::string& want, const std::string& got) {
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  const size_t from = i > 40 ? i - 40 : 0;
  std::ostringstream os;
  os << "first difference at byte " << i << " (expected " << want.size() << " bytes, got " << got.size()
     << ")\n  expected: ..." << OJson(want.substr(from, 80)).dump() << "\n  got:      ..."
     << OJson(got.substr(from, 80)).dump();
  return os.str();
}

struct LoadedTemplate {
  ChatTemplate tmpl;
  std::optional<std::string> bos;
  std::optional<std::string> eos;
};

Result<LoadedTemplate> load_template(const OJson& entry) {
  if (entry.contains("config")) {
    ANVIL_ASSIGN_OR_RETURN(ChatTemplate t, load_chat_template(kDataDir + entry["config"].get<std::string>()));
    return LoadedTemplate{std::move(t), std::nullopt, std::nullopt};
  }
  ANVIL_ASSIGN_OR_RETURN(std::string source, read_file(kDataDir + entry["template_file"].get<std::string>()));
  ANVIL_ASSIGN_OR_RETURN(ChatTemplate t, ChatTemplate::parse(source));
  return LoadedTemplate{std::move(t), entry["bos_token"].get<std::string>(), entry["eos_token"].get<std::string>()};
}

class ReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceTest, RendersLikeTransformers) {
  const OJson ref = load_reference();
  ASSERT_TRUE(ref.is_object());
  const std::string name = GetParam();
  const OJson* entry = nullptr;
  for (const auto& t : ref["templates"])
    if (t["name"] == name) entry = &t;
  ASSERT_NE(entry, nullptr) << "no template " << name << " in reference.json";
  Result<LoadedTemplate> loaded = load_template(*entry);
  ASSERT_TRUE(loaded.is_ok()) << loaded.status().to_string();

  int renderings = 0;
  int errors = 0;
  for (const auto& c : ref["cases"]) {
    if (c["template"] != name) continue;
    SCOPED_TRACE(name + "/" + c["name"].get<std::string>());
    ChatTemplateOptions opts;
    opts.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    opts.bos_token = loaded->bos;
    opts.eos_token = loaded->eos;
    opts.tools = c["tools"];
    opts.extra = c["extra"];
    opts.drop_null_message_fields = c["drop_null_message_fields"].get<bool>();
    Result<std::string> got = loaded->tmpl.render(c["messages"], opts);
    if (c.contains("expected")) {
      ++renderings;
      ASSERT_TRUE(got.is_ok()) << got.status().to_string();
      const std::string want = c["expected"].get<std::string>();
      EXPECT_EQ(*got, want) << first_difference(want, *got);
    } else {
      ++errors;
      ASSERT_FALSE(got.is_ok()) << "rendered instead of failing:\n" << *got;
      EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(got.status().message().find(c["error"].get<std::string>()), std::string::npos)
          << "message: " << got.status().message() << "\nexpected to contain: " << c["error"].get<std::string>();
    }
  }
  EXPECT_GE(renderings, 20) << "too few reference renderings for " << name;
  if (name == "gemma3" || name == "llama2" || name == "mistral") {
    EXPECT_GE(errors, 2);
  }
}

INSTANTIATE_TEST_SUITE_P(Templates, ReferenceTest,
                         ::testing::Values("llama3", "qwen3", "deepseek_v3", "gemma3", "llama2", "mistral", "llama31"),
                         [](const auto& info) { return info.param; });

TEST(ChatTemplateLoad, ReadsSpecialTokensAsStringsOrObjects) {
  Result<ChatTemplate> llama = load_chat_template(kDataDir + "configs/llama3_tokenizer_config.json");
  ASSERT_TRUE(llama.is_ok()) << llama.status().to_string();
  EXPECT_EQ(llama->default_bos_token(), std::optional<std::string>("<|begin_of_text|>"));
  EXPECT_EQ(llama->default_eos_token(), std::optional<std::string>("<|end_of_text|>"));

  Result<ChatTemplate> deepseek = load_chat_template(kDataDir + "configs/deepseek_v3_tokenizer_config.json");
  ASSERT_TRUE(deepseek.is_ok()) << deepseek.status().to_string();
  EXPECT_EQ(deepseek->default_bos_token(), std::optional<std::string>("<｜begin▁of▁sentence｜>"));
  EXPECT_EQ(deepseek->default_eos_token(), std::optional<std::string>("<｜end▁of▁sentence｜>"));

  Result<ChatTemplate> qwen = load_chat_template(kDataDir + "configs/qwen3_tokenizer_config.json");
  ASSERT_TRUE(qwen.is_ok()) << qwen.status().to_string();
  EXPECT_FALSE(qwen->default_bos_token().has_value());  // null in the config
  EXPECT_EQ(qwen->default_eos_token(), std::optional<std::string>("<|im_end|>"));
}

TEST(ChatTemplateRender, OneTemplateRendersFromManyThreads) {
  const OJson ref = load_reference();
  ASSERT_TRUE(ref.is_object());
  Result<ChatTemplate> t = load_chat_template(kDataDir + "configs/qwen3_tokenizer_config.json");
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  std::vector<const OJson*> cases;
  for (const auto& c : ref["cases"])
    if (c["template"] == "qwen3" && c.contains("expected")) cases.push_back(&c);
  ASSERT_FALSE(cases.empty());
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (int round = 0; round < 20; ++round) {
        for (const OJson* c : cases) {
          ChatTemplateOptions opts;
          opts.add_generation_prompt = (*c)["add_generation_prompt"].get<bool>();
          opts.tools = (*c)["tools"];
          opts.extra = (*c)["extra"];
          Result<std::string> got = t->render((*c)["messages"], opts);
          if (!got.is_ok() || *got != (*c)["expected"].get<std::string>()) ++mismatches[w];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int w = 0; w < 4; ++w) EXPECT_EQ(mismatches[w], 0) << "thread " << w;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/anvil_chat_template_XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  std::string write(const std::string& name, const std::string& text) const {
    const std::string p = path_ + "/" + name;
    std::ofstream(p) << text;
    return p;
  }

 private:
  std::string path_;
};

TEST(ChatTemplateLoad, TakesDefaultFromTemplateList) {
  TempDir dir;
  const std::string path = dir.write("tokenizer_config.json", R"({
    "bos_token": {"content": "<B>", "lstrip": false}, "eos_token": "<E>",
    "chat_template": [{"name": "tool_use", "template": "TOOLS"},
                      {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}]})");
  Result<ChatTemplate> t = load_chat_template(path);
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  Result<std::string> out = t->render(nlohmann::json::parse(R"([{"role": "user", "content": "hi"}])"), {});
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  EXPECT_EQ(*out, "<B>hi<E>");
}

TEST(ChatTemplateLoad, ReportsMissingOrBadTemplates) {
  TempDir dir;
  Result<ChatTemplate> none = load_chat_template(dir.write("tokenizer_config.json", R"({"bos_token": "<s>"})"));
  ASSERT_FALSE(none.is_ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find("chat_template"), std::string::npos);

  Result<ChatTemplate> no_default =
      load_chat_template(dir.write("list.json", R"({"chat_template": [{"name": "rag", "template": "x"}]})"));
  ASSERT_FALSE(no_default.is_ok());
  EXPECT_NE(no_default.status().message().find("rag"), std::string::npos);

  Result<ChatTemplate> broken = load_chat_template(dir.write("broken.json", R"({"chat_template": "{% if x %}"})"));
  ASSERT_FALSE(broken.is_ok());
  EXPECT_NE(broken.status().message().find("broken.json"), std::string::npos);
  EXPECT_NE(broken.status().message().find("endif"), std::string::npos);

  Result<ChatTemplate> not_json = load_chat_template(dir.write("bad.json", "{not json"));
  ASSERT_FALSE(not_json.is_ok());
  EXPECT_NE(not_json.status().message().find("bad.json"), std::string::npos);
}

TEST(ChatTemplateLoad, FallsBackToChatTemplateJinjaFile) {
  TempDir dir;
  const std::string config = dir.write("tokenizer_config.json", R"({"eos_token": "</s>"})");
  dir.write("chat_template.jinja", "{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}\n");
  Result<ChatTemplate> t = load_chat_template(config);
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  Result<std::string> out = t->render(nlohmann::json::parse(R"([{"role": "user", "content": "a"}])"), {});
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  EXPECT_EQ(*out, "[user]a</s>");
}

}  // namespace
}  // namespace anvil
