// Interpreter semantics against HF's Jinja environment: every small template in
// tests/data/chat_templates/semantics.json (whitespace control, printing, operators, loops,
// scoping, namespaces, macros, filters, tests, string methods, runtime errors) must render to the
// text jinja2 produced, or fail with jinja2's message.
#include <gtest/gtest.h>

#include "core/mmap_file.h"
#include "tokenizer/jinja/interpreter.h"
#include "tokenizer/jinja/parser.h"

namespace anvil::jinja {
namespace {

using OJson = nlohmann::ordered_json;

const std::string kDataDir = std::string(ANVIL_SOURCE_DIR) + "/tests/data/chat_templates/";

Result<std::string> render_source(const std::string& source, const OJson& variables) {
  ANVIL_ASSIGN_OR_RETURN(ParsedTemplate parsed, parse_template(source));
  std::vector<std::pair<std::string, Value>> globals;
  for (auto it = variables.begin(); it != variables.end(); ++it) globals.emplace_back(it.key(), from_json(*it));
  return render_template(parsed.body, std::move(globals));
}

TEST(JinjaSemantics, MatchesJinja2) {
  Result<std::string> text = read_file(kDataDir + "semantics.json");
  ASSERT_TRUE(text.is_ok()) << text.status().to_string();
  const OJson ref = OJson::parse(*text);
  int checked = 0;
  for (const auto& c : ref["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>() + ": " + c["template"].get<std::string>());
    Result<std::string> got = render_source(c["template"].get<std::string>(), c["variables"]);
    ++checked;
    if (c.contains("expected")) {
      ASSERT_TRUE(got.is_ok()) << got.status().to_string();
      EXPECT_EQ(*got, c["expected"].get<std::string>());
    } else {
      ASSERT_FALSE(got.is_ok()) << "rendered instead of failing: " << *got;
      EXPECT_NE(got.status().message().find(c["error"].get<std::string>()), std::string::npos)
          << "message: " << got.status().message() << "\nexpected to contain: " << c["error"].get<std::string>();
    }
  }
  EXPECT_GE(checked, 60);
}

TEST(JinjaSemantics, RuntimeErrorsNameTheirPosition) {
  Result<std::string> got = render_source("line one\n{% if true %}\n  {{ raise_exception('stop here') }}\n{% endif %}",
                                          OJson::object());
  ASSERT_FALSE(got.is_ok());
  EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(got.status().message().find("line 3"), std::string::npos) << got.status().message();
  EXPECT_NE(got.status().message().find("stop here"), std::string::npos) << got.status().message();
}

TEST(JinjaSemantics, WorkLimitsStopRunawayTemplates) {
  // 10^5 * 10^5 iterations: must stop at the step limit, not run for minutes.
  RenderLimits limits;
  limits.max_steps = 100000;
  Result<ParsedTemplate> parsed =
      parse_template("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}");
  ASSERT_TRUE(parsed.is_ok()) << parsed.status().to_string();
  Result<std::string> got = render_template(parsed->body, {}, limits);
  ASSERT_FALSE(got.is_ok());
  EXPECT_NE(got.status().message().find("work limit"), std::string::npos) << got.status().message();

  Result<ParsedTemplate> big = parse_template("{{ 'x' * 100000000000 }}");
  ASSERT_TRUE(big.is_ok());
  Result<std::string> huge = render_template(big->body, {});
  ASSERT_FALSE(huge.is_ok());
  EXPECT_NE(huge.status().message().find("exceeds"), std::string::npos) << huge.status().message();

  for (const char* amplifier : {"{{ ('a' * 100000)|replace('a', 'b' * 10000) }}",
                                "{{ ('a' * 100000).replace('a', 'b' * 10000) }}",
                                "{{ (['x' * 1000000] * 1000)|join }}", "{{ 'x'|indent(100000000) }}"}) {
    SCOPED_TRACE(amplifier);
    Result<ParsedTemplate> p = parse_template(amplifier);
    ASSERT_TRUE(p.is_ok()) << p.status().to_string();
    Result<std::string> r = render_template(p->body, {});
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().to_string();
  }

  Result<ParsedTemplate> recursive = parse_template("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  ASSERT_TRUE(recursive.is_ok());
  Result<std::string> deep = render_template(recursive->body, {});
  ASSERT_FALSE(deep.is_ok());
  EXPECT_NE(deep.status().message().find("nested deeper"), std::string::npos) << deep.status().message();
}

TEST(JinjaSemantics, StrftimeNowFormatsTheCurrentDate) {
  Result<std::string> got = render_source("{{ strftime_now('%Y') }}|{{ strftime_now('%d %b %Y') }}", OJson::object());
  ASSERT_TRUE(got.is_ok()) << got.status().to_string();
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  EXPECT_EQ(got->substr(0, 4), std::to_string(1900 + local.tm_year));
  EXPECT_EQ(got->size(), 4u + 1u + 11u);  // "2026|25 Nov 2026"
}

}  // namespace
}  // namespace anvil::jinja
