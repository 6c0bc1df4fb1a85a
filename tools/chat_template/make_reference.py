#!/usr/bin/env python3
"""Makes the chat-template reference fixture for anvil's C++ tests.

Renders conversations with HF transformers' own chat-template path (render_jinja_template after
_normalize_chat_messages: exactly what tokenizer.apply_chat_template(..., tokenize=False) runs) and
stores conversations + expected text (or the expected error) in
tests/data/chat_templates/reference.json. The C++ tests must reproduce every rendering byte for byte.

Templates: the real tokenizer_config.json files of llama3, qwen3, deepseek_v3 and gemma3 (copied,
trimmed to chat_template/bos_token/eos_token, into tests/data/chat_templates/configs/), plus the
hand-written official-behaviour templates in tests/data/chat_templates/templates/ (Llama 2 chat,
Mistral instruct, Llama 3.1 with tools).

Usage: python3 tools/chat_template/make_reference.py [--tokenizers /work/shared/data/tokenizers]
       [--check-apply-chat-template]   (also renders every case through a real tokenizer's
                                        apply_chat_template and asserts the text is identical)
"""

import argparse
import copy
import json
import lzma
import os
import tempfile

import jinja2
import transformers
from transformers.utils.chat_template_utils import _normalize_chat_messages, render_jinja_template

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(REPO, "tests", "data", "chat_templates")

CONFIG_TEMPLATES = ["llama3", "qwen3", "deepseek_v3", "gemma3"]
FILE_TEMPLATES = {  # name -> (bos, eos, tokenizer folder used for the apply_chat_template check)
    "llama2": ("<s>", "</s>", "llama2"),
    "mistral": ("<s>", "</s>", "llama2"),
    "llama31": ("<|begin_of_text|>", "<|eot_id|>", "llama3"),
}


def token_text(field):
    if isinstance(field, dict):
        return field.get("content")
    return field


# ---- conversations ----

def generic_conversations():
    """Plain chats every template renders (roles alternate, optional leading system)."""
    return [
        ("single_user", [{"role": "user", "content": "Hello!"}]),
        ("system_user", [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": "What is 2+2?"}]),
        ("multi_turn", [{"role": "user", "content": "Hi there."},
                        {"role": "assistant", "content": "Hello! How can I help?"},
                        {"role": "user", "content": "Tell me a joke."}]),
        ("system_multi_turn", [{"role": "system", "content": "Answer briefly."},
                               {"role": "user", "content": "Capital of France?"},
                               {"role": "assistant", "content": "Paris."},
                               {"role": "user", "content": "And of Italy?"},
                               {"role": "assistant", "content": "Rome."}]),
        ("unicode", [{"role": "user", "content": "你好，世界! Ünïcödé café — emoji 🦙🔥, RTL: שלום, math: ∑x²"}]),
        ("empty_content", [{"role": "user", "content": ""}]),
        ("whitespace_padding", [{"role": "system", "content": "  padded system \n"},
                                {"role": "user", "content": "\n\n  lots of space  \t\n"}]),
        ("special_chars", [{"role": "user", "content": "Quotes \"double\" and 'single', backslash \\ , "
                                                       "braces {{ not a tag }} {% neither %}, tab\there\nnewline"}]),
        ("long_multi_turn", [
            {"role": "user", "content": "Turn one."}, {"role": "assistant", "content": "Reply one."},
            {"role": "user", "content": "Turn two."}, {"role": "assistant", "content": "Reply two."},
            {"role": "user", "content": "Turn three."}, {"role": "assistant", "content": "Reply three."},
            {"role": "user", "content": "Turn four."}]),
        ("ends_with_assistant", [{"role": "user", "content": "Say hi."},
                                 {"role": "assistant", "content": "Hi!"}]),
    ]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "description": "Current time in a timezone.",
                 "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}},
}


def tool_call(name, arguments, as_string=False):
    return {"type": "function", "function": {"name": name,
                                             "arguments": json.dumps(arguments) if as_string else arguments}}


def template_specific_cases(name):
    """(case name, messages, tools, add_generation_prompt, extra, drop_null_message_fields)."""
    cases = []
    alternation_error = [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
    if name in ("llama2", "mistral", "gemma3"):
        cases.append(("error_roles_not_alternating", alternation_error, None, True, {}, True))
        cases.append(("error_assistant_first", [{"role": "assistant", "content": "I start."},
                                                {"role": "user", "content": "ok"}], None, False, {}, True))
    if name == "mistral":
        cases.append(("error_tool_role", [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                                          {"role": "tool", "content": "r"}], None, False, {}, True))
    if name == "gemma3":
        parts = [{"role": "system", "content": [{"type": "text", "text": "System as parts."}]},
                 {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "  Describe this.  "}]}]
        cases.append(("content_parts", parts, None, True, {}, True))
    if name == "qwen3":
        tools = [WEATHER_TOOL, TIME_TOOL]
        tool_chat = [
            {"role": "system", "content": "You can call tools."},
            {"role": "user", "content": "Weather in Zürich and the time in Tokyo?"},
            {"role": "assistant", "content": "", "tool_calls": [
                tool_call("get_weather", {"city": "Zürich", "unit": "celsius"}),
                tool_call("get_time", {"tz": "Asia/Tokyo"})]},
            {"role": "tool", "content": "{\"temp\": 21}"},
            {"role": "tool", "content": "10:42"},
            {"role": "assistant", "content": "It is 21°C in Zürich and 10:42 in Tokyo."},
            {"role": "user", "content": "Thanks!"},
        ]
        cases.append(("tools_full_exchange", tool_chat, tools, True, {}, True))
        cases.append(("tools_no_system", tool_chat[1:5], tools, True, {}, True))
        cases.append(("tool_call_string_arguments", [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Let me check.",
             "tool_calls": [tool_call("get_weather", {"city": "Oslo"}, as_string=True)]},
            {"role": "tool", "content": "cold"}], tools, True, {}, True))
        cases.append(("tool_call_null_content", [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [tool_call("get_weather", {"city": "Oslo"})]},
            {"role": "tool", "content": "cold"}], tools, False, {}, True))
        think_chat = [{"role": "user", "content": "Solve 3*7."},
                      {"role": "assistant", "content": "<think>\n3*7 is 21.\n</think>\n\n21"},
                      {"role": "user", "content": "And 4*8?"}]
        for agp in (True, False):
            for thinking in (True, False):
                cases.append((f"enable_thinking_{str(thinking).lower()}", think_chat, None, agp,
                              {"enable_thinking": thinking}, True))
        cases.append(("reasoning_content_last_turn", [
            {"role": "user", "content": "Why is the sky blue?"},
            {"role": "assistant", "content": "Rayleigh scattering.", "reasoning_content": "Short wavelengths scatter."}],
            None, False, {}, True))
        cases.append(("think_in_final_assistant", [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "<think>greet back</think>Hello!"}], None, False, {}, True))
    if name == "deepseek_v3":
        tools_chat = [
            {"role": "system", "content": "Use tools when needed."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                tool_call("get_weather", {"city": "Paris"}, as_string=True),
                tool_call("get_time", {"tz": "Europe/Paris"}, as_string=True)]},
            {"role": "tool", "content": "sunny, 25°C"},
            {"role": "tool", "content": "14:00"},
            {"role": "assistant", "content": "Sunny and 25°C at 14:00."},
            {"role": "user", "content": "Great."},
        ]
        # The template needs content None to take its tool-call branch; transformers 5 drops null
        # keys first, so render these without that normalization (drop_null_message_fields=False).
        cases.append(("tool_calls_raw_messages", tools_chat, None, True, {}, False))
        cases.append(("tool_output_then_generation", tools_chat[:5], None, True, {}, False))
        cases.append(("tool_calls_hf_normalized_error", tools_chat[:3], None, True, {}, True))
        cases.append(("two_system_messages", [{"role": "system", "content": "First."},
                                              {"role": "system", "content": "Second."},
                                              {"role": "user", "content": "Hi"}], None, True, {}, True))
    if name == "llama31":
        tools = [WEATHER_TOOL]
        call_chat = [
            {"role": "system", "content": "You are a bot."},
            {"role": "user", "content": "Weather in Berlin?"},
            {"role": "assistant", "tool_calls": [tool_call("get_weather", {"city": "Berlin", "unit": "celsius"})]},
            {"role": "tool", "content": "{\"temp\": 18}"},
        ]
        cases.append(("tools_in_user_message", call_chat, tools, True, {}, True))
        cases.append(("tools_in_system", call_chat, tools, True, {"tools_in_user_message": False}, True))
        cases.append(("tools_custom_date", call_chat[1:2], tools, True, {"date_string": "01 Jan 2025"}, True))
        cases.append(("tool_result_mapping", call_chat[:3] + [{"role": "ipython", "content": {"temp": 18}}],
                      tools, True, {}, True))
        cases.append(("builtin_tools", [
            {"role": "user", "content": "Search the web for llamas."},
            {"role": "assistant", "tool_calls": [tool_call("brave_search", {"query": "llamas"})]},
            {"role": "ipython", "content": "Llamas are camelids."}], None, True,
            {"builtin_tools": ["brave_search", "wolfram_alpha", "code_interpreter"]}, True))
        cases.append(("error_parallel_tool_calls", [
            {"role": "user", "content": "two calls"},
            {"role": "assistant", "tool_calls": [tool_call("get_weather", {"city": "A"}),
                                                 tool_call("get_weather", {"city": "B"})]}],
            tools, True, {}, True))
        cases.append(("error_tools_without_user", [{"role": "system", "content": "sys"}], tools, True, {}, True))
    return cases


# ---- rendering ----

def hf_render(template, messages, tools, agp, special, extra, drop_null):
    conv = copy.deepcopy(messages)
    if drop_null:
        conv = _normalize_chat_messages(conv)
    rendered, _ = render_jinja_template(conversations=[conv], tools=copy.deepcopy(tools), chat_template=template,
                                        add_generation_prompt=agp, **special, **copy.deepcopy(extra))
    return rendered[0]


def load_tokenizer(tokenizers_dir, folder, bos, eos, workdir):
    path = os.path.join(workdir, folder + ".json")
    if not os.path.exists(path):
        with lzma.open(os.path.join(tokenizers_dir, folder, "tokenizer.json.xz")) as f, open(path, "wb") as g:
            g.write(f.read())
    kwargs = {"tokenizer_file": path}
    if bos is not None:
        kwargs["bos_token"] = bos
    if eos is not None:
        kwargs["eos_token"] = eos
    return transformers.PreTrainedTokenizerFast(**kwargs)


# ---- interpreter semantics: small templates rendered by HF's Jinja environment ----

SEMANTIC_CASES = [
    # whitespace control: trim_blocks, lstrip_blocks, -, +
    ("ws_trim_lstrip", "  {% if true %}\n  x\n  {% endif %}\n  {{ 1 }}  \n{# c #}\nz", {}),
    ("ws_minus", "a  \n {%- if true -%}  \n b \n {%- endif -%} \n c", {}),
    ("ws_plus", "a\n  {%+ if true +%}\nb\n  {%+ endif %}\nc", {}),
    ("ws_output_minus", "x  {{- ' y ' -}}  z\n{{ 'w' }}\n", {}),
    ("ws_block_after_output", "{{ 'a' }}  {% if true %}b{% endif %}", {}),
    ("ws_comment_lstrip", "line\n    {# note #}\nnext", {}),
    ("ws_crlf", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\n", {}),
    ("ws_trailing_newline_dropped", "text\n", {}),
    ("ws_raw", "{% raw %}{{ not rendered }}{% endraw %}", {}),
    # literals and printing
    ("print_values", "{{ 1 }} {{ 1.5 }} {{ 1e20 }} {{ 1e-5 }} {{ 3.0 }} {{ none }} {{ true }} {{ [1, 'a', none] }} "
                     "{{ {'k': [2, 'it''s']} }} {{ (1,) }} {{ (1, 2) }}", {}),
    ("print_escapes", "{{ 'tab\\there' }}|{{ \"q'\" }}|{{ ['x\\ny', \"it's\", 'say \"hi\"'] }}", {}),
    ("undefined_prints_empty", "[{{ missing }}][{{ d.nokey }}]", {"d": {}}),
    # arithmetic
    ("arith", "{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1 + 2.5 }} "
              "{{ 'ab' * 3 }} {{ [1] * 2 }} {{ 0.1 + 0.2 }} {{ true + 1 }} {{ 10 - 3 * 2 }}", {}),
    ("concat_tilde", "{{ 'a' ~ 1 ~ none ~ missing ~ [1] }}", {}),
    ("string_plus_list_plus", "{{ 'a' + 'b' }} {{ [1] + [2, 3] }}", {}),
    # comparisons and logic
    ("compare", "{{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 5 }} "
                "{{ 'x' in 'xyz' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'xyz' }} {{ none == none }}", {}),
    ("and_or_values", "{{ 0 or 'fallback' }} {{ 'a' and 'b' }} {{ '' and 'x' }}|{{ not [] }} {{ none or [] }}", {}),
    ("ternary", "{{ 'yes' if flag else 'no' }} [{{ 'only' if not flag }}]", {"flag": True}),
    # subscripts and slices
    ("slices", "{{ 'héllo'[::-1] }} {{ [1, 2, 3, 4][1:] }} {{ [1, 2, 3, 4][:-1] }} {{ 'abcdef'[1:5:2] }} "
               "{{ [1, 2, 3][::-2] }} {{ 'abc'[-1] }} {{ [1, 2][5] is defined }} {{ 'ab'[10:] }}", {}),
    ("attr_vs_item", "{{ d.a }} {{ d['a'] }} {{ d.get('b', 'dflt') }} {{ l.0 }} {{ l[-1] }}", {"d": {"a": 1}, "l": [5, 6]}),
    # loops
    ("loop_vars", "{% for x in ['a', 'b', 'c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
                  "{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
                  "{{ loop.previtem if not loop.first }}{{ loop.nextitem if not loop.last }};{% endfor %}", {}),
    ("loop_else", "{% for x in [] %}x{% else %}empty{% endfor %}", {}),
    ("loop_filter", "{% for x in range(10) if x is odd %}{{ x }}{{ loop.length }},{% endfor %}", {}),
    ("loop_unpack_items", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k, v in d|items %}{{ k }}{% endfor %}",
     {"d": {"z": 1, "a": [2]}}),
    ("loop_dict_keys", "{% for k in d %}{{ k }}{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("loop_string", "{% for c in 'añb' %}[{{ c }}]{% endfor %}", {}),
    ("loop_break_continue", "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}"
                            "{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}", {}),
    ("loop_scoping", "{% set x = 5 %}{% for i in [1, 2] %}[{{ x }}]{% set x = i %}({{ x }}){% endfor %}{{ x }}", {}),
    ("loop_nested", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }}{% endfor %}"
                    "{{ loop.index }}|{% endfor %}", {}),
    ("loop_cycle", "{% for i in range(5) %}{{ loop.cycle('odd', 'even') }} {% endfor %}", {}),
    ("loop_range", "{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }}", {}),
    # set and namespace
    ("namespace", "{% set ns = namespace(count=0, items='') %}{% for i in range(4) %}{% set ns.count = ns.count + i %}"
                  "{% set ns.items = ns.items ~ i %}{% endfor %}{{ ns.count }} {{ ns.items }}", {}),
    ("set_tuple_and_block", "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set blk %}inner {{ a }}{% endset %}[{{ blk }}]", {}),
    ("set_shadows_global", "{% set messages = messages[1:] %}{{ messages|length }}", {"messages": [1, 2, 3]}),
    ("dict_literal_and_global", "{{ dict(a=1, b='x') }} {{ {'x': 1, 'x': 2} }}", {}),
    # macros
    ("macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
              "{{ greet('Ann') }} {{ greet('Bob', punct='?') }} {{ greet(name='Cy') }}", {}),
    ("macro_sees_globals", "{% macro m() %}{{ g }}{% endmacro %}{{ m() }}", {"g": "global"}),
    ("macro_scoping", "{% macro m() %}[{{ x }}]{% endmacro %}{% set x = 1 %}{{ m() }}{% set x = 2 %}{{ m() }}|"
                      "{% for i in [1] %}{% set x = 5 %}{{ m() }}{% endfor %}|"
                      "{% for i in [1, 2] %}{% macro n() %}[{{ i }}]{% endmacro %}{{ n() }}{% endfor %}|"
                      "{% macro p(a, b) %}{{ a }}/{{ b }}/{{ loop is defined }}{% endmacro %}{% for i in [1] %}{{ p(i) }}{% endfor %}",
     {}),
    ("block_scopes", "{% if true %}{% set y = 3 %}{% endif %}{{ y }}|{% generation %}{% set z = 1 %}{% endgeneration %}"
                     "[{{ z }}]|{% set x = 1 %}{% set b %}{% set x = 2 %}{{ x }}{% endset %}{{ b }}{{ x }}", {}),
    # filters
    ("f_trim_length", "[{{ '  a b \n'|trim }}] {{ 'héllo'|length }} {{ [1, 2]|count }} {{ {'a': 1}|length }} "
                      "{{ missing|length }} [{{ 'xxaxx'|trim('x') }}]", {}),
    ("f_tojson", "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ 'ü\"\\n'|tojson }}|{{ 'ü'|tojson(ensure_ascii=true) }}|"
                 "{{ d|tojson(sort_keys=true) }}|{{ [1.0, none, true]|tojson(separators=(',', ':')) }}|{{ {}|tojson(indent=2) }}",
     {"d": {"b": [1, {"c": None}], "a": "x", "e": 2.5, "f": []}}),
    ("f_tojson_emoji_ascii", "{{ '🦙'|tojson(ensure_ascii=True) }} {{ '\\x01'|tojson }}", {}),
    ("f_select_reject", "{{ users|selectattr('active')|map(attribute='name')|join(', ') }}|"
                        "{{ users|rejectattr('active')|map(attribute='name')|list }}|"
                        "{{ users|selectattr('role', 'equalto', 'admin')|list|length }}|"
                        "{{ [1, 2, 3, 4]|select('even')|list }} {{ [1, 2, 3]|reject('odd')|list }}",
     {"users": [{"name": "a", "active": True, "role": "admin"}, {"name": "b", "active": False, "role": "user"},
                {"name": "c", "active": True, "role": "admin"}]}),
    ("f_first_last", "{{ [3, 4]|first }} {{ [3, 4]|last }} {{ 'xyz'|first }} [{{ []|first }}]", {}),
    ("f_join_map", "{{ [1, 2, 3]|join('-') }} {{ ['a', 'b']|map('upper')|join }} {{ items|map(attribute='k.0')|list }}",
     {"items": [{"k": [1]}, {"k": [2]}]}),
    ("f_string_int_float", "{{ 5|string ~ 'x' }} {{ '42'|int + 1 }} {{ '3.9'|int }} {{ 'abc'|int }} {{ 'abc'|int(7) }} "
                           "{{ 2.7|int }} {{ '1.5'|float * 2 }} {{ true|int }}", {}),
    ("f_case", "{{ 'hELLo wORLD'|upper }} {{ 'HeLLo'|lower }} {{ 'hello WORLD'|capitalize }} {{ 'hello big-world'|title }}", {}),
    ("f_replace_default", "{{ 'aaa'|replace('a', 'b', 2) }} {{ missing|default('dflt') }} {{ ''|default('e', true) }} "
                          "{{ ''|default('e') }} {{ none|default('n') }} {{ missing|d('x') }}", {}),
    ("f_safe_list", "{{ 'x<y'|safe }} {{ 'abc'|list }} {{ {'a': 1}|list }}", {}),
    ("f_sort_unique_reverse", "{{ ['b', 'A', 'c']|sort }} {{ [3, 1, 2]|sort(reverse=true) }} "
                              "{{ items|sort(attribute='n')|map(attribute='n')|list }} {{ ['a', 'A', 'b']|unique|list }} "
                              "{{ [1, 2, 3]|reverse|list }} {{ 'abc'|reverse }}", {"items": [{"n": 2}, {"n": 1}]}),
    ("f_min_max_sum_abs_round", "{{ [3, 1, 2]|min }} {{ [3, 1, 2]|max }} {{ [1, 2, 3]|sum }} {{ -3|abs }} "
                                "{{ 2.567|round(2) }} {{ 2.5|round }} {{ 2.1|round(0, 'ceil') }}", {}),
    ("f_indent", "{{ 'a\nb\n\nc'|indent(2) }}|{{ 'x\ny'|indent(3, true) }}", {}),
    ("f_items_attr", "{{ {'a': 1}|items|list }} {{ d|attr('k') }}", {"d": {"k": "v"}}),
    # tests
    ("tests", "{{ x is defined }} {{ y is undefined }} {{ n is none }} {{ s is string }} {{ d is mapping }} "
              "{{ l is iterable }} {{ s is iterable }} {{ 3 is number }} {{ 3 is integer }} {{ 3.0 is float }} "
              "{{ true is boolean }} {{ false is false }} {{ 4 is even }} {{ 9 is divisibleby 3 }} "
              "{{ 'ab' is lower }} {{ 2 is in [1, 2] }} {{ 1 is eq 1 }} {{ 1 is sameas true }} {{ none is sameas none }} "
              "{{ d is not mapping }} {{ 5 is gt 3 }} {{ 5 is le(5) }}",
     {"x": 1, "n": None, "s": "str", "d": {}, "l": [1]}),
    # string methods
    ("str_methods", "{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a b c'.rsplit(' ', 1) }} "
                    "{{ '--x--'.strip('-') }} {{ '  x '.lstrip() }}| {{ 'x\n\n'.rstrip('\n') }} {{ 'hello'.startswith('he') }} "
                    "{{ 'hello'.endswith(('x', 'lo')) }} {{ 'a-b'.replace('-', '+') }} {{ 'abcabc'.find('c') }} "
                    "{{ 'abcabc'.rfind('c') }} {{ 'abcabc'.count('bc') }} {{ ', '.join(['x', 'y']) }} "
                    "{{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }} {{ '123'.isdigit() }} {{ 'ab1'.isalpha() }} "
                    "{{ 'a\nb\r\nc'.splitlines() }} {{ 'prefix_x'.removeprefix('prefix_') }} {{ 'UP'.lower() }} "
                    "{{ 'x'.upper() }} {{ '  '.isspace() }}", {}),
    ("str_unicode_methods", "{{ 'ÉCOLE'.lower() }} {{ 'straße'.upper() }} {{ '  ü  '.strip() }} {{ 'naïve café'.split() }} "
                            "{{ '日本語'[1] }} {{ '日本語'|length }}", {}),
    ("dict_methods", "{{ d.keys()|list }} {{ d.values()|list }} {{ d.items()|list }} {{ d.get('zz') }}", {"d": {"x": 1, "y": [2]}}),
    # precedence and mixed expressions
    ("precedence", "{{ -1 ** 2 }} {{ not 1 == 2 }} {{ 0 or 1 and 0 }} {{ 1 ~ 2 ~ 3 }} {{ [1, 2, 3]|length > 2 }} "
                   "{{ 2 * 3 + 4 }} {{ 2 + 3 * 4 }} {{ (2 + 3) * 4 }} {{ 'a' ~ (1 + 2) }} {{ not x is defined }}", {}),
    ("multiline_expression", "{{\n  'a'\n  ~ 'b'\n}}|{%\n  set y = [1,\n 2]\n%}{{ y }}", {}),
    # undefined and None flowing through filters
    ("undefined_filters", "[{{ m|upper }}][{{ m|join(',') }}][{{ m|first }}][{{ m|list }}][{{ m|items|list }}]"
                          "[{{ m|selectattr('a')|list }}][{{ m|length }}][{{ m|string }}][{{ m|trim }}][{{ m is iterable }}]"
                          "[{{ 'x' in m }}][{{ m|default(none) }}]", {}),
    ("none_filters", "[{{ n|string }}][{{ n|trim }}][{{ n|default('d') }}][{{ n is none }}][{{ n|tojson }}]", {"n": None}),
    ("attr_on_string_and_none", "[{{ s.nope }}][{{ s.nope is defined }}][{{ n.nope is defined }}]", {"s": "x", "n": None}),
    ("messages_select", "{{ messages|selectattr('role', 'equalto', 'system')|list|length }} "
                        "{{ messages|rejectattr('role', 'in', ['system', 'tool'])|map(attribute='content')|join('|') }} "
                        "{{ (messages|last).role }} {{ messages[-1]['content'][:3] }}",
     {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hello"},
                   {"role": "tool", "content": "t"}, {"role": "assistant", "content": "answer"}]}),
    ("content_parts_loop", "{% for m in messages %}{% if m.content is string %}{{ m.content }}{% else %}"
                           "{% for p in m.content if p.type == 'text' %}{{ p.text }}{% if not loop.last %}+{% endif %}"
                           "{% endfor %}{% endif %};{% endfor %}",
     {"messages": [{"content": "plain"}, {"content": [{"type": "text", "text": "a"}, {"type": "image"},
                                                      {"type": "text", "text": "b"}]}]}),
    ("namespace_list_accumulate", "{% set ns = namespace(seen=[], d={}) %}{% for x in ['a', 'b', 'a'] %}"
                                  "{% if x not in ns.seen %}{% set ns.seen = ns.seen + [x] %}{% endif %}{% endfor %}"
                                  "{{ ns.seen }} {{ ns.d }}", {}),
    ("dictsort", "{{ d|dictsort }} {{ d|dictsort(reverse=true) }} {{ d|dictsort(by='value') }}",
     {"d": {"b": 1, "A": 3, "c": 2}}),
    ("tojson_nested_unicode_indent", "{{ t|tojson(indent=4) }}",
     {"t": {"name": "météo", "params": {"enum": ["a", "ü"], "n": 1.0, "e": {}}}}),
    ("float_formatting", "{{ 1/3 }} {{ 100000000000000000.0 }} {{ 1e16 }} {{ 123456789012345.6 }} {{ 0.0001 }} "
                         "{{ -0.0 }} {{ 2.5e-7 }} {{ [1.10, 2e100] }}", {}),
    ("int_filter_bases_and_strings", "{{ ' 12 '|int }} {{ '0x1A'|int(0, 16) }} {{ '1_000'|int }} {{ '-7'|int }}", {}),
    ("generation_tag", "a{% generation %}b{{ 1 }}{% endgeneration %}c", {}),
    # runtime errors
    ("err_raise", "{{ raise_exception('custom failure: ' ~ 42) }}", {}),
    ("err_undefined_attr", "{{ missing.attr }}", {}),
    ("err_nested_undefined", "{{ d.a.b }}", {"d": {}}),
    ("err_add_undefined", "{{ 'x' + d.nope }}", {"d": {}}),
    ("err_type_add", "{{ 1 + 'a' }}", {}),
    ("err_compare_types", "{{ 'a' < 1 }}", {}),
    ("err_iterate_none", "{% for x in n %}{% endfor %}", {"n": None}),
    ("err_tojson_undefined", "{{ missing|tojson }}", {}),
    ("err_ns_underscore", "{% set ns = namespace() %}{% set ns._x = 1 %}", {}),
    ("err_range_too_big", "{{ range(1000000)|length }}", {}),
    ("err_zero_division", "{{ 1 // 0 }}", {}),
    ("err_concat_binds_tighter_than_plus", "{{ 1 + 2 ~ 3 }}", {}),
    ("err_int_of_undefined", "{{ m|int }}", {}),
    ("err_indent_of_undefined", "{{ m|indent }}", {}),
    ("err_slice_undefined", "{{ m[1:] }}", {}),
    ("err_unpack_count", "{% for a, b in [[1, 2, 3]] %}{% endfor %}", {}),
]


def render_semantics():
    from transformers.utils.chat_template_utils import _compile_jinja_template
    out = []
    for name, template, variables in SEMANTIC_CASES:
        case = {"name": name, "template": template, "variables": variables}
        try:
            case["expected"] = _compile_jinja_template(template).render(**copy.deepcopy(variables))
        except Exception as e:
            case["error"] = str(e)
        out.append(case)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizers", default="/work/shared/data/tokenizers")
    ap.add_argument("--check-apply-chat-template", action="store_true")
    args = ap.parse_args()

    templates = []
    sources = {}
    for name in CONFIG_TEMPLATES:
        with open(os.path.join(args.tokenizers, name, "tokenizer_config.json"), encoding="utf-8") as f:
            config = json.load(f)
        trimmed = {k: config[k] for k in ("bos_token", "eos_token", "chat_template") if k in config}
        rel = f"configs/{name}_tokenizer_config.json"
        with open(os.path.join(OUT_DIR, rel), "w", encoding="utf-8") as f:
            json.dump(trimmed, f, ensure_ascii=False, indent=2)
            f.write("\n")
        bos, eos = token_text(config.get("bos_token")), token_text(config.get("eos_token"))
        templates.append({"name": name, "config": rel})
        sources[name] = (config["chat_template"], bos, eos, name)
    for name, (bos, eos, folder) in FILE_TEMPLATES.items():
        rel = f"templates/{name}.jinja"
        with open(os.path.join(OUT_DIR, rel), encoding="utf-8") as f:
            source = f.read()
        templates.append({"name": name, "template_file": rel, "bos_token": bos, "eos_token": eos})
        sources[name] = (source, bos, eos, folder)

    cases = []
    for name, (source, bos, eos, _) in sources.items():
        special = {}
        if bos is not None:
            special["bos_token"] = bos
        if eos is not None:
            special["eos_token"] = eos
        specs = []
        for conv_name, messages in generic_conversations():
            for agp in (False, True):
                specs.append((f"{conv_name}_agp_{str(agp).lower()}", messages, None, agp, {}, True))
        specs += template_specific_cases(name)
        for case_name, messages, tools, agp, extra, drop_null in specs:
            case = {"template": name, "name": case_name, "messages": messages, "tools": tools,
                    "add_generation_prompt": agp, "extra": extra, "drop_null_message_fields": drop_null}
            try:
                case["expected"] = hf_render(source, messages, tools, agp, special, extra, drop_null)
            except Exception as e:  # the template rejects this conversation
                case["error"] = str(e)
            cases.append(case)

    if args.check_apply_chat_template:
        with tempfile.TemporaryDirectory() as workdir:
            for name, (source, bos, eos, folder) in sources.items():
                tok = load_tokenizer(args.tokenizers, folder, bos, eos, workdir)
                checked = 0
                for case in cases:
                    if case["template"] != name or "expected" not in case or not case["drop_null_message_fields"]:
                        continue
                    got = tok.apply_chat_template(copy.deepcopy(case["messages"]), tools=case["tools"],
                                                  chat_template=source, tokenize=False,
                                                  add_generation_prompt=case["add_generation_prompt"],
                                                  **case["extra"])
                    assert got == case["expected"], (name, case["name"], got, case["expected"])
                    checked += 1
                print(f"{name}: apply_chat_template matches on {checked} cases")

    out = {
        "generator": "tools/chat_template/make_reference.py",
        "transformers_version": transformers.__version__,
        "jinja2_version": jinja2.__version__,
        "templates": templates,
        "cases": cases,
    }
    with open(os.path.join(OUT_DIR, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    semantics = render_semantics()
    with open(os.path.join(OUT_DIR, "semantics.json"), "w", encoding="utf-8") as f:
        json.dump({"generator": out["generator"], "transformers_version": transformers.__version__,
                   "jinja2_version": jinja2.__version__, "cases": semantics}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"semantics: {sum('expected' in c for c in semantics)} renderings, "
          f"{sum('error' in c for c in semantics)} expected errors")
    per = {}
    for c in cases:
        per.setdefault(c["template"], [0, 0])[0 if "expected" in c else 1] += 1
    for name, (ok, err) in per.items():
        print(f"{name}: {ok} renderings, {err} expected errors")


if __name__ == "__main__":
    main()
