// Load-time refusal: a template that uses a construct outside the supported subset, or is
// malformed, must fail in ChatTemplate::parse with a message naming the construct and where it is.
#include <gtest/gtest.h>

#include "tokenizer/chat_template.h"

namespace anvil {
namespace {

struct BadTemplate {
  const char* source;
  const char* construct;  // must appear in the message
  const char* position;   // "line L, column C" of the offending construct
};

void expect_refused(const BadTemplate& bad) {
  SCOPED_TRACE(bad.source);
  Result<ChatTemplate> t = ChatTemplate::parse(bad.source);
  ASSERT_FALSE(t.is_ok()) << "template parsed but must be refused";
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find(bad.construct), std::string::npos) << t.status().message();
  EXPECT_NE(t.status().message().find(bad.position), std::string::npos) << t.status().message();
}

TEST(ChatTemplateParse, RefusesUnsupportedTags) {
  for (const BadTemplate& bad : {
           BadTemplate{"Hello\n  {% include 'other.jinja' %}", "unsupported tag '{% include %}'", "line 2, column 3"},
           BadTemplate{"{% extends 'base' %}", "'{% extends %}'", "line 1, column 1"},
           BadTemplate{"x{% block body %}{% endblock %}", "'{% block %}'", "line 1, column 2"},
           BadTemplate{"{% import 'm' as m %}", "'{% import %}'", "line 1, column 1"},
           BadTemplate{"{% call foo() %}x{% endcall %}", "'{% call %}'", "line 1, column 1"},
           BadTemplate{"{% filter upper %}x{% endfilter %}", "'{% filter %}'", "line 1, column 1"},
           BadTemplate{"{% do ns.update() %}", "'{% do %}'", "line 1, column 1"},
           BadTemplate{"{% autoescape true %}{% endautoescape %}", "'{% autoescape %}'", "line 1, column 1"},
       }) {
    expect_refused(bad);
  }
}

TEST(ChatTemplateParse, RefusesUnsupportedFiltersTestsMethodsAndFunctions) {
  for (const BadTemplate& bad : {
           BadTemplate{"{{ x | escape }}", "unsupported filter 'escape'", "line 1, column 8"},
           BadTemplate{"{{ x|trim|wordcount }}", "unsupported filter 'wordcount'", "line 1, column 11"},
           BadTemplate{"{% if x is escaped %}{% endif %}", "unsupported test 'escaped'", "line 1, column 12"},
           BadTemplate{"{{ '{}'.format(x) }}", "unsupported method 'format()'", "line 1, column 8"},
           BadTemplate{"{% set l = [] %}{{ l.append(1) }}", "unsupported method 'append()'", "line 1, column 21"},
           BadTemplate{"{{ cycler('a', 'b') }}", "unsupported function 'cycler'", "line 1, column 4"},
           BadTemplate{"\n\n   {{ lipsum(2) }}", "unsupported function 'lipsum'", "line 3, column 7"},
           BadTemplate{"{{ [x][0]() }}", "calling the result of an expression", "line 1, column 10"},
           BadTemplate{"{{ f(*args) }}", "*args", "line 1, column 6"},
           BadTemplate{"{% for x in y recursive %}{% endfor %}", "recursive", "line 1, column 15"},
           BadTemplate{"{% macro m(*a) %}{% endmacro %}", "*args", "line 1, column 12"},
       }) {
    expect_refused(bad);
  }
}

TEST(ChatTemplateParse, RefusesMalformedTemplates) {
  for (const BadTemplate& bad : {
           BadTemplate{"{% if x %}never closed", "'{% endif %}'", "line 1, column 1"},
           BadTemplate{"a\n{% endfor %}", "unexpected '{% endfor %}'", "line 2, column 1"},
           BadTemplate{"{% for x in y %}{% endif %}", "unexpected '{% endif %}'", "line 1, column 17"},
           BadTemplate{"{% else %}", "unexpected '{% else %}'", "line 1, column 1"},
           BadTemplate{"{{ }}", "empty expression", "line 1, column 1"},
           BadTemplate{"{{ 'abc }}", "unterminated string literal", "line 1, column 4"},
           BadTemplate{"{{ (1 }}", "unexpected '}', expected ')'", "line 1, column 7"},
           BadTemplate{"{{ [1, 2) }}", "unexpected ')', expected ']'", "line 1, column 9"},
           BadTemplate{"{# never ends", "missing end of comment", "line 1, column 1"},
           BadTemplate{"text {{ x ", "unclosed '{{'", "line 1, column 6"},
           BadTemplate{"{% for x %}{% endfor %}", "expected 'in'", "line 1, column 10"},
           BadTemplate{"{{ 1 + }}", "expected an expression", "line 1, column 8"},
           BadTemplate{"{% set %}", "expected a name", "line 1, column 8"},
           BadTemplate{"{{ a.) }}", "unexpected ')'", "line 1, column 6"},
           BadTemplate{"{{ x y }}", "expected end of tag, got 'y'", "line 1, column 6"},
           BadTemplate{"{% break %}", "'break' outside of a for loop", "line 1, column 1"},
           BadTemplate{"{{ 1 @ 2 }}", "unexpected character '@'", "line 1, column 6"},
           BadTemplate{"{% raw %}no end", "endraw", "line 1, column 1"},
           BadTemplate{"{{ 99999999999999999999 }}", "does not fit in 64 bits", "line 1, column 4"},
       }) {
    expect_refused(bad);
  }
}

TEST(ChatTemplateParse, AcceptsMacrosGenerationAndLoopControls) {
  Result<ChatTemplate> t = ChatTemplate::parse(
      "{% macro render(m) %}<{{ m.role }}>{{ m.content }}{% endmacro %}"
      "{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}"
      "{% if m.role == 'assistant' %}{% generation %}{{ render(m) }}{% endgeneration %}{% else %}{{ render(m) }}"
      "{% endif %}{% endfor %}");
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  Result<std::string> out = t->render(nlohmann::json::parse(R"([{"role": "user", "content": "a"},
      {"role": "skip", "content": "b"}, {"role": "assistant", "content": "c"}])"),
                                      ChatTemplateOptions{});
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  EXPECT_EQ(*out, "<user>a<assistant>c");
}

TEST(ChatTemplateRender, RejectsBadInputsWithClearErrors) {
  Result<ChatTemplate> t = ChatTemplate::parse("{{ messages[0].content }}");
  ASSERT_TRUE(t.is_ok());
  Result<std::string> not_list = t->render(nlohmann::json::object(), ChatTemplateOptions{});
  ASSERT_FALSE(not_list.is_ok());
  EXPECT_NE(not_list.status().message().find("list"), std::string::npos);
  Result<std::string> empty = t->render(nlohmann::json::array(), ChatTemplateOptions{});
  ASSERT_FALSE(empty.is_ok());
  EXPECT_NE(empty.status().message().find("empty"), std::string::npos);
  Result<std::string> not_object = t->render(nlohmann::json::parse(R"(["hi"])"), ChatTemplateOptions{});
  ASSERT_FALSE(not_object.is_ok());
  EXPECT_NE(not_object.status().message().find("message 0"), std::string::npos);
  ChatTemplateOptions bad_tools;
  bad_tools.tools = "not a list";
  Result<std::string> tools = t->render(nlohmann::json::parse(R"([{"role": "user", "content": "x"}])"), bad_tools);
  ASSERT_FALSE(tools.is_ok());
  EXPECT_NE(tools.status().message().find("tools"), std::string::npos);
}

TEST(ChatTemplateRender, KeepsToolKeyOrderWithOrderedJson) {
  Result<ChatTemplate> t = ChatTemplate::parse("{{ tools[0] | tojson }}");
  ASSERT_TRUE(t.is_ok());
  ChatTemplateOptions opts;
  opts.tools = nlohmann::ordered_json::parse(R"([{"type": "function", "function": {"name": "f"}}])");
  Result<std::string> out = t->render(nlohmann::ordered_json::parse(R"([{"role": "user", "content": "x"}])"), opts);
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  EXPECT_EQ(*out, R"({"type": "function", "function": {"name": "f"}})");
}

TEST(ChatTemplateRender, DropsNullFieldsLikeTransformersUnlessAskedNotTo) {
  Result<ChatTemplate> t = ChatTemplate::parse("{{ messages[0].content is none }}/{{ messages[0].content is defined }}");
  ASSERT_TRUE(t.is_ok());
  const auto msgs = nlohmann::json::parse(R"([{"role": "assistant", "content": null}])");
  ChatTemplateOptions opts;
  Result<std::string> dropped = t->render(msgs, opts);
  ASSERT_TRUE(dropped.is_ok()) << dropped.status().to_string();
  EXPECT_EQ(*dropped, "False/False");
  opts.drop_null_message_fields = false;
  Result<std::string> kept = t->render(msgs, opts);
  ASSERT_TRUE(kept.is_ok()) << kept.status().to_string();
  EXPECT_EQ(*kept, "True/True");
}

}  // namespace
}  // namespace anvil

namespace anvil {
namespace {

TEST(ChatTemplateRender, AcceptsPlainJsonForOptions) {
  Result<ChatTemplate> t = ChatTemplate::parse(
      "{% if enable_thinking is false %}no-think{% endif %}|{{ tools | length }}|{{ bos_token }}|{{ eos_token }}");
  ASSERT_TRUE(t.is_ok());
  ChatTemplateOptions opts;
  opts.extra = nlohmann::json{{"enable_thinking", false}, {"eos_token", "<override>"}};
  opts.tools = nlohmann::json::parse(R"([{"type": "function"}, {"type": "function"}])");
  opts.bos_token = "<s>";
  Result<std::string> out = t->render(nlohmann::json::parse(R"([{"role": "user", "content": "x"}])"), opts);
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  EXPECT_EQ(*out, "no-think|2|<s>|<override>");

  opts.extra = nlohmann::json{{"messages", 1}};
  Result<std::string> clash = t->render(nlohmann::json::parse(R"([{"role": "user", "content": "x"}])"), opts);
  ASSERT_FALSE(clash.is_ok());
  EXPECT_NE(clash.status().message().find("messages"), std::string::npos);
}

}  // namespace
}  // namespace anvil
