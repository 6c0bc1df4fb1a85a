// Recursive-descent parser for the Jinja subset (see parser.h). Precedence, lowest first, as in
// jinja2/parser.py: conditional, or, and, not, comparisons/in, + -, ~, * / // %, **, unary -/+,
// then postfix (.attr, [item], call) and the filter chain (| filter, is test, call).
#include "tokenizer/jinja/parser.h"

#include <cerrno>
#include <cstdlib>
#include <set>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/lexer.h"

namespace anvil::jinja {

namespace {

using ast::Body;
using ast::Expr;
using ast::ExprKind;
using ast::ExprPtr;
using ast::Stmt;
using ast::StmtKind;
using ast::StmtPtr;

ExprPtr make_expr(ExprKind kind, SourcePos pos) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->pos = pos;
  return e;
}

class Parser {
 public:
  explicit Parser(std::vector<Segment> segments) : segs_(std::move(segments)) {}

  Result<ParsedTemplate> run() {
    ParsedTemplate out;
    std::string hit;
    ANVIL_ASSIGN_OR_RETURN(out.body, parse_body({}, &hit, SourcePos{}));
    for (const auto& [name, pos] : called_names_) {
      if (!is_known_global(name) && !macro_names_.count(name)) {
        return error(pos, "unsupported function '" + name + "' (not a Jinja global HF provides nor a macro)");
      }
    }
    return out;
  }

 private:
  // ---- statements ----

  Status error(SourcePos pos, const std::string& what) const {
    return invalid_argument("chat template error at " + describe(pos) + ": " + what);
  }

  const Token& cur() const { return segs_[seg_].tokens[tok_]; }
  const Token& peek(size_t ahead = 1) const {
    const auto& toks = segs_[seg_].tokens;
    return toks[std::min(tok_ + ahead, toks.size() - 1)];
  }
  void advance() {
    if (cur().kind != TokenKind::kEnd) ++tok_;
  }
  bool is_op(const char* op) const { return cur().kind == TokenKind::kOperator && cur().text == op; }
  bool is_name(const char* n) const { return cur().kind == TokenKind::kName && cur().text == n; }
  Status expect_op(const char* op) {
    if (!is_op(op)) return error(cur().pos, std::string("expected '") + op + "', got " + token_desc(cur()));
    advance();
    return Status::ok();
  }
  Status expect_end() {
    if (cur().kind != TokenKind::kEnd) return error(cur().pos, "expected end of tag, got " + token_desc(cur()));
    return Status::ok();
  }
  Result<std::string> expect_name() {
    if (cur().kind != TokenKind::kName) return error(cur().pos, "expected a name, got " + token_desc(cur()));
    std::string n = cur().text;
    advance();
    return n;
  }
  static std::string token_desc(const Token& t) {
    switch (t.kind) {
      case TokenKind::kEnd:
        return "end of tag";
      case TokenKind::kString:
        return "a string literal";
      case TokenKind::kName:
      case TokenKind::kInteger:
      case TokenKind::kFloat:
      case TokenKind::kOperator:
        return "'" + t.text + "'";
    }
    return "token";
  }

  // Parses statements until one of `end_tags` (left as the current statement, its tag name
  // consumed) or the end of the template (only allowed when end_tags is empty).
  Result<Body> parse_body(const std::set<std::string>& end_tags, std::string* hit, SourcePos opened_at) {
    Body body;
    while (seg_ < segs_.size()) {
      const Segment& seg = segs_[seg_];
      tok_ = 0;
      switch (seg.kind) {
        case SegmentKind::kText: {
          auto s = std::make_unique<Stmt>();
          s->kind = StmtKind::kText;
          s->pos = seg.pos;
          s->text = seg.text;
          body.push_back(std::move(s));
          ++seg_;
          continue;
        }
        case SegmentKind::kOutput: {
          auto s = std::make_unique<Stmt>();
          s->kind = StmtKind::kOutput;
          s->pos = seg.pos;
          if (cur().kind == TokenKind::kEnd) return error(seg.pos, "empty expression in '{{ }}'");
          ANVIL_ASSIGN_OR_RETURN(s->expr, parse_tuple_or_expr());
          ANVIL_RETURN_IF_ERROR(expect_end());
          body.push_back(std::move(s));
          ++seg_;
          continue;
        }
        case SegmentKind::kStatement:
          break;
      }
      if (cur().kind != TokenKind::kName) return error(seg.pos, "expected a tag name after '{%'");
      const std::string tag = cur().text;
      if (end_tags.count(tag)) {
        *hit = tag;
        advance();
        return body;
      }
      advance();
      StmtPtr stmt;
      if (tag == "if") {
        ANVIL_ASSIGN_OR_RETURN(stmt, parse_if(seg.pos));
      } else if (tag == "for") {
        ANVIL_ASSIGN_OR_RETURN(stmt, parse_for(seg.pos));
      } else if (tag == "set") {
        ANVIL_ASSIGN_OR_RETURN(stmt, parse_set(seg.pos));
      } else if (tag == "macro") {
        ANVIL_ASSIGN_OR_RETURN(stmt, parse_macro(seg.pos));
      } else if (tag == "generation") {
        // HF's AssistantTracker tag: renders its body unchanged.
        ANVIL_RETURN_IF_ERROR(expect_end());
        ++seg_;
        stmt = std::make_unique<Stmt>();
        stmt->kind = StmtKind::kBlock;
        stmt->pos = seg.pos;
        std::string end;
        ANVIL_ASSIGN_OR_RETURN(Body inner, parse_body({"endgeneration"}, &end, seg.pos));
        ANVIL_RETURN_IF_ERROR(expect_end());
        ++seg_;
        stmt->bodies.push_back(std::move(inner));
      } else if (tag == "break" || tag == "continue") {
        if (loop_depth_ == 0) return error(seg.pos, "'" + tag + "' outside of a for loop");
        ANVIL_RETURN_IF_ERROR(expect_end());
        ++seg_;
        stmt = std::make_unique<Stmt>();
        stmt->kind = tag == "break" ? StmtKind::kBreak : StmtKind::kContinue;
        stmt->pos = seg.pos;
      } else if (tag.rfind("end", 0) == 0 || tag == "else" || tag == "elif") {
        return error(seg.pos, "unexpected '{% " + tag + " %}'" +
                                  (end_tags.empty() ? std::string() : " (expected one of " + join(end_tags) + ")"));
      } else {
        return error(seg.pos, "unsupported tag '{% " + tag + " %}'");
      }
      body.push_back(std::move(stmt));
    }
    if (!end_tags.empty()) {
      return error(opened_at, "tag is never closed: expected " + join(end_tags) + " before the end of the template");
    }
    return body;
  }

  static std::string join(const std::set<std::string>& tags) {
    std::string out;
    for (const auto& t : tags) out += (out.empty() ? "'{% " : ", '{% ") + t + " %}'";
    return out;
  }

  Result<StmtPtr> parse_if(SourcePos pos) {
    auto s = std::make_unique<Stmt>();
    s->kind = StmtKind::kIf;
    s->pos = pos;
    while (true) {
      ANVIL_ASSIGN_OR_RETURN(ExprPtr cond, parse_tuple_or_expr());
      ANVIL_RETURN_IF_ERROR(expect_end());
      ++seg_;
      s->conditions.push_back(std::move(cond));
      std::string hit;
      ANVIL_ASSIGN_OR_RETURN(Body b, parse_body({"elif", "else", "endif"}, &hit, pos));
      s->bodies.push_back(std::move(b));
      if (hit == "elif") continue;
      if (hit == "else") {
        ANVIL_RETURN_IF_ERROR(expect_end());
        ++seg_;
        ANVIL_ASSIGN_OR_RETURN(Body e, parse_body({"endif"}, &hit, pos));
        s->bodies.push_back(std::move(e));
      }
      ANVIL_RETURN_IF_ERROR(expect_end());
      ++seg_;
      return s;
    }
  }

  Result<std::vector<std::string>> parse_targets() {
    std::vector<std::string> names;
    const bool paren = is_op("(");
    if (paren) advance();
    while (true) {
      ANVIL_ASSIGN_OR_RETURN(std::string n, expect_name());
      names.push_back(std::move(n));
      if (!is_op(",")) break;
      advance();
      if (paren && is_op(")")) break;
    }
    if (paren) ANVIL_RETURN_IF_ERROR(expect_op(")"));
    return names;
  }

  Result<StmtPtr> parse_for(SourcePos pos) {
    auto s = std::make_unique<Stmt>();
    s->kind = StmtKind::kFor;
    s->pos = pos;
    ANVIL_ASSIGN_OR_RETURN(s->targets, parse_targets());
    if (!is_name("in")) return error(cur().pos, "expected 'in' in for loop, got " + token_desc(cur()));
    advance();
    // The iterable is parsed without the conditional expression so that `if` filters the loop.
    ANVIL_ASSIGN_OR_RETURN(s->expr, parse_tuple_or_expr(/*with_condexpr=*/false));
    if (is_name("if")) {
      advance();
      ANVIL_ASSIGN_OR_RETURN(s->loop_filter, parse_expression());
    }
    if (is_name("recursive")) return error(cur().pos, "unsupported construct: recursive for loops");
    ANVIL_RETURN_IF_ERROR(expect_end());
    ++seg_;
    ++loop_depth_;
    std::string hit;
    ANVIL_ASSIGN_OR_RETURN(Body b, parse_body({"else", "endfor"}, &hit, pos));
    s->bodies.push_back(std::move(b));
    --loop_depth_;
    if (hit == "else") {
      ANVIL_RETURN_IF_ERROR(expect_end());
      ++seg_;
      ANVIL_ASSIGN_OR_RETURN(Body e, parse_body({"endfor"}, &hit, pos));
      s->bodies.push_back(std::move(e));
    }
    ANVIL_RETURN_IF_ERROR(expect_end());
    ++seg_;
    return s;
  }

  Result<StmtPtr> parse_set(SourcePos pos) {
    auto s = std::make_unique<Stmt>();
    s->kind = StmtKind::kSet;
    s->pos = pos;
    ANVIL_ASSIGN_OR_RETURN(std::string first, expect_name());
    s->targets.push_back(first);
    if (is_op(".")) {
      advance();
      ANVIL_ASSIGN_OR_RETURN(s->attr, expect_name());
    } else {
      while (is_op(",")) {
        advance();
        ANVIL_ASSIGN_OR_RETURN(std::string n, expect_name());
        s->targets.push_back(std::move(n));
      }
    }
    if (cur().kind == TokenKind::kEnd && s->attr.empty() && s->targets.size() == 1) {
      // {% set name %}...{% endset %}
      s->kind = StmtKind::kSetBlock;
      ++seg_;
      std::string hit;
      ANVIL_ASSIGN_OR_RETURN(Body b, parse_body({"endset"}, &hit, pos));
      ANVIL_RETURN_IF_ERROR(expect_end());
      ++seg_;
      s->bodies.push_back(std::move(b));
      return s;
    }
    if (is_op("|")) return error(cur().pos, "unsupported construct: filtered block set");
    ANVIL_RETURN_IF_ERROR(expect_op("="));
    ANVIL_ASSIGN_OR_RETURN(s->expr, parse_tuple_or_expr());
    ANVIL_RETURN_IF_ERROR(expect_end());
    ++seg_;
    return s;
  }

  Result<StmtPtr> parse_macro(SourcePos pos) {
    auto s = std::make_unique<Stmt>();
    s->kind = StmtKind::kMacro;
    s->pos = pos;
    s->macro = std::make_unique<ast::Macro>();
    ANVIL_ASSIGN_OR_RETURN(s->macro->name, expect_name());
    ANVIL_RETURN_IF_ERROR(expect_op("("));
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) return error(cur().pos, "unsupported construct: *args in a macro signature");
      ANVIL_ASSIGN_OR_RETURN(std::string p, expect_name());
      ExprPtr dflt;
      if (is_op("=")) {
        advance();
        ANVIL_ASSIGN_OR_RETURN(dflt, parse_expression());
      } else if (!s->macro->defaults.empty() && s->macro->defaults.back()) {
        return error(cur().pos, "macro parameter '" + p + "' without a default follows one with a default");
      }
      s->macro->params.push_back(std::move(p));
      s->macro->defaults.push_back(std::move(dflt));
      if (!is_op(",")) break;
      advance();
    }
    ANVIL_RETURN_IF_ERROR(expect_op(")"));
    ANVIL_RETURN_IF_ERROR(expect_end());
    ++seg_;
    macro_names_.insert(s->macro->name);
    const int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    std::string hit;
    ANVIL_ASSIGN_OR_RETURN(s->macro->body, parse_body({"endmacro"}, &hit, pos));
    loop_depth_ = saved_loop_depth;
    if (cur().kind == TokenKind::kName) advance();  // {% endmacro name %}
    ANVIL_RETURN_IF_ERROR(expect_end());
    ++seg_;
    return s;
  }

  // ---- expressions ----

  // A top-level expression where a bare tuple is allowed: `a, b`.
  Result<ExprPtr> parse_tuple_or_expr(bool with_condexpr = true) {
    const SourcePos pos = cur().pos;
    ANVIL_ASSIGN_OR_RETURN(ExprPtr first, with_condexpr ? parse_expression() : parse_or());
    if (!is_op(",")) return first;
    auto t = make_expr(ExprKind::kTuple, pos);
    t->args.push_back(std::move(first));
    while (is_op(",")) {
      advance();
      if (cur().kind == TokenKind::kEnd || is_op("=") || is_name("if")) break;
      ANVIL_ASSIGN_OR_RETURN(ExprPtr e, with_condexpr ? parse_expression() : parse_or());
      t->args.push_back(std::move(e));
    }
    return t;
  }

  Result<ExprPtr> parse_expression() {
    ANVIL_ASSIGN_OR_RETURN(ExprPtr e, parse_or());
    while (is_name("if")) {
      const SourcePos pos = cur().pos;
      advance();
      auto c = make_expr(ExprKind::kCond, pos);
      ANVIL_ASSIGN_OR_RETURN(ExprPtr cond, parse_or());
      ExprPtr otherwise;
      if (is_name("else")) {
        advance();
        ANVIL_ASSIGN_OR_RETURN(otherwise, parse_expression());
      }
      c->args.push_back(std::move(cond));
      c->args.push_back(std::move(e));
      c->args.push_back(std::move(otherwise));
      e = std::move(c);
    }
    return e;
  }

  Result<ExprPtr> parse_or() {
    ANVIL_ASSIGN_OR_RETURN(ExprPtr e, parse_and());
    while (is_name("or")) {
      auto n = make_expr(ExprKind::kOr, cur().pos);
      advance();
      ANVIL_ASSIGN_OR_RETURN(ExprPtr r, parse_and());
      n->args.push_back(std::move(e));
      n->args.push_back(std::move(r));
      e = std::move(n);
    }
    return e;
  }

  Result<ExprPtr> parse_and() {
    ANVIL_ASSIGN_OR_RETURN(ExprPtr e, parse_not());
    while (is_name("and")) {
      auto n = make_expr(ExprKind::kAnd, cur().pos);
      advance();
      ANVIL_ASSIGN_OR_RETURN(ExprPtr r, parse_not());
      n->args.push_back(std::move(e));
      n->args.push_back(std::move(r));
      e = std::move(n);
    }
    return e;
  }

  Result<ExprPtr> parse_not() {
    if (is_name("not")) {
      auto n = make_expr(ExprKind::kNot, cur().pos);
      advance();
      ANVIL_ASSIGN_OR_RETURN(ExprPtr operand, parse_not());
      n->args.push_back(std::move(operand));
      return n;
    }
    return parse_compare();
  }

  Result<ExprPtr> parse_compare() {
    const SourcePos pos = cur().pos;
    ANVIL_ASSIGN_OR_RETURN(ExprPtr e, parse_math1());
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().kind == TokenKind::kOperator &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
           cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        advance();
      } else if (is_name("in")) {
        op = "in";
        advance();
      } else if (is_name("not") && peek().kind == TokenKind::kName && peek().text == "in") {
        op = "not in";
        advance();
        advance();
      } else {
        break;
      }
      if (!cmp) {
        cmp = make_expr(ExprKind::kCompare, pos);
        cmp->args.push_back(std::move(e));
      }
      ANVIL_ASSIGN_OR_RETURN(ExprPtr r, parse_math1());
      cmp->ops.push_back(op);
      cmp->args.push_back(std::move(r));
    }
    return cmp ? std::move(cmp) : std::move(e);
  }

  template <typename Next>
  Result<ExprPtr> parse_binary_level(std::initializer_list<const char*> ops, Next next) {
    ANVIL_ASSIGN_OR_RETURN(ExprPtr e, (this->*next)());
    while (true) {
      const char* hit = nullptr;
      for (const char* op : ops)
        if (is_op(op)) hit = op;
      if (!hit) return e;
      auto n = make_expr(ExprKind::kBinary, cur().pos);
      n->name = hit;
      advance();
      ANVIL_ASSIGN_OR_RETURN(ExprPtr r, (this->*next)());
      n->args.push_back(std::move(e));
      n->args.push_back(std::move(r));
      e = std::move(n);
    }
  }
  Result<ExprPtr> parse_math1() { return parse_binary_level({"+", "-"}, &Parser::parse_concat); }
  Result<ExprPtr> parse_concat() { return parse_binary_level({"~"}, &Parser::parse_math2); }
  Result<ExprPtr> parse_math2() { return parse_binary_level({"*", "/", "//", "%"}, &Parser::parse_pow); }
  Result<ExprPtr> parse_pow() { return parse_binary_level({"**"}, &Parser::parse_unary_filtered); }
  Result<ExprPtr> parse_unary_filtered() { return parse_unary(true); }

  Result<ExprPtr> parse_unary(bool with_filter) {
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      node = make_expr(is_op("-") ? ExprKind::kNeg : ExprKind::kPos, cur().pos);
      advance();
      ANVIL_ASSIGN_OR_RETURN(ExprPtr operand, parse_unary(false));
      node->args.push_back(std::move(operand));
    } else {
      ANVIL_ASSIGN_OR_RETURN(node, parse_primary());
    }
    ANVIL_ASSIGN_OR_RETURN(node, parse_postfix(std::move(node)));
    if (with_filter) {
      ANVIL_ASSIGN_OR_RETURN(node, parse_filter_expr(std::move(node)));
    }
    return node;
  }

  Result<ExprPtr> parse_primary() {
    const Token& t = cur();
    const SourcePos pos = t.pos;
    switch (t.kind) {
      case TokenKind::kName: {
        auto e = make_expr(ExprKind::kLiteral, pos);
        if (t.text == "true" || t.text == "True") {
          e->literal = Value::boolean(true);
        } else if (t.text == "false" || t.text == "False") {
          e->literal = Value::boolean(false);
        } else if (t.text == "none" || t.text == "None") {
          e->literal = Value::none();
        } else {
          e->kind = ExprKind::kName;
          e->name = t.text;
        }
        advance();
        return e;
      }
      case TokenKind::kString: {
        std::string s;
        while (cur().kind == TokenKind::kString) {  // adjacent literals concatenate
          s += cur().text;
          advance();
        }
        auto e = make_expr(ExprKind::kLiteral, pos);
        e->literal = Value::string(std::move(s));
        return e;
      }
      case TokenKind::kInteger: {
        errno = 0;
        const long long v = std::strtoll(t.text.c_str(), nullptr, 10);
        if (errno == ERANGE) return error(pos, "integer literal " + t.text + " does not fit in 64 bits");
        auto e = make_expr(ExprKind::kLiteral, pos);
        e->literal = Value::integer(v);
        advance();
        return e;
      }
      case TokenKind::kFloat: {
        auto e = make_expr(ExprKind::kLiteral, pos);
        e->literal = Value::floating(std::strtod(t.text.c_str(), nullptr));
        advance();
        return e;
      }
      case TokenKind::kOperator:
        break;
      case TokenKind::kEnd:
        return error(pos, "expected an expression, got end of tag");
    }
    if (is_op("(")) {
      advance();
      if (is_op(")")) {
        advance();
        return make_expr(ExprKind::kTuple, pos);
      }
      ANVIL_ASSIGN_OR_RETURN(ExprPtr first, parse_expression());
      if (is_op(")")) {
        advance();
        return first;
      }
      auto tuple = make_expr(ExprKind::kTuple, pos);
      tuple->args.push_back(std::move(first));
      while (is_op(",")) {
        advance();
        if (is_op(")")) break;
        ANVIL_ASSIGN_OR_RETURN(ExprPtr e, parse_expression());
        tuple->args.push_back(std::move(e));
      }
      ANVIL_RETURN_IF_ERROR(expect_op(")"));
      return tuple;
    }
    if (is_op("[")) {
      advance();
      auto list = make_expr(ExprKind::kList, pos);
      while (!is_op("]")) {
        ANVIL_ASSIGN_OR_RETURN(ExprPtr e, parse_expression());
        list->args.push_back(std::move(e));
        if (!is_op(",")) break;
        advance();
      }
      ANVIL_RETURN_IF_ERROR(expect_op("]"));
      return list;
    }
    if (is_op("{")) {
      advance();
      auto dict = make_expr(ExprKind::kDict, pos);
      while (!is_op("}")) {
        ANVIL_ASSIGN_OR_RETURN(ExprPtr k, parse_expression());
        ANVIL_RETURN_IF_ERROR(expect_op(":"));
        ANVIL_ASSIGN_OR_RETURN(ExprPtr v, parse_expression());
        dict->args.push_back(std::move(k));
        dict->args.push_back(std::move(v));
        if (!is_op(",")) break;
        advance();
      }
      ANVIL_RETURN_IF_ERROR(expect_op("}"));
      return dict;
    }
    return error(pos, "unexpected " + token_desc(t) + " in expression");
  }

  Result<ExprPtr> parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".")) {
        const SourcePos pos = cur().pos;
        advance();
        if (cur().kind == TokenKind::kName) {
          auto a = make_expr(ExprKind::kAttr, pos);
          a->name = cur().text;
          advance();
          a->args.push_back(std::move(node));
          node = std::move(a);
        } else if (cur().kind == TokenKind::kInteger) {
          auto it = make_expr(ExprKind::kItem, pos);
          auto idx = make_expr(ExprKind::kLiteral, cur().pos);
          idx->literal = Value::integer(std::strtoll(cur().text.c_str(), nullptr, 10));
          advance();
          it->args.push_back(std::move(node));
          it->args.push_back(std::move(idx));
          node = std::move(it);
        } else {
          return error(cur().pos, "expected an attribute name after '.', got " + token_desc(cur()));
        }
      } else if (is_op("[")) {
        ANVIL_ASSIGN_OR_RETURN(node, parse_subscript(std::move(node)));
      } else if (is_op("(")) {
        ANVIL_ASSIGN_OR_RETURN(node, parse_call(std::move(node)));
      } else {
        return node;
      }
    }
  }

  Result<ExprPtr> parse_subscript(ExprPtr node) {
    const SourcePos pos = cur().pos;
    advance();  // [
    ExprPtr parts[3];
    int colons = 0;
    while (!is_op("]")) {
      if (is_op(":")) {
        if (++colons > 2) return error(cur().pos, "too many ':' in slice");
        advance();
        continue;
      }
      if (parts[colons]) return error(cur().pos, "expected ':' or ']' in subscript, got " + token_desc(cur()));
      ANVIL_ASSIGN_OR_RETURN(parts[colons], parse_tuple_or_expr());
    }
    advance();  // ]
    if (colons == 0) {
      if (!parts[0]) return error(pos, "empty subscript '[]'");
      auto it = make_expr(ExprKind::kItem, pos);
      it->args.push_back(std::move(node));
      it->args.push_back(std::move(parts[0]));
      return it;
    }
    auto sl = make_expr(ExprKind::kSlice, pos);
    sl->args.push_back(std::move(node));
    for (auto& p : parts) sl->args.push_back(std::move(p));
    return sl;
  }

  Status parse_call_args(Expr& call) {
    ANVIL_RETURN_IF_ERROR(expect_op("("));
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) return error(cur().pos, "unsupported construct: *args / **kwargs in a call");
      if (cur().kind == TokenKind::kName && peek().kind == TokenKind::kOperator && peek().text == "=") {
        std::string key = cur().text;
        advance();
        advance();
        ANVIL_ASSIGN_OR_RETURN(ExprPtr v, parse_expression());
        call.kwargs.emplace_back(std::move(key), std::move(v));
      } else {
        if (!call.kwargs.empty()) return error(cur().pos, "positional argument follows keyword argument");
        ANVIL_ASSIGN_OR_RETURN(ExprPtr v, parse_expression());
        call.args.push_back(std::move(v));
      }
      if (!is_op(",")) break;
      advance();
    }
    return expect_op(")");
  }

  Result<ExprPtr> parse_call(ExprPtr callee) {
    auto call = make_expr(ExprKind::kCall, cur().pos);
    if (callee->kind == ExprKind::kName) {
      called_names_.emplace_back(callee->name, callee->pos);
    } else if (callee->kind == ExprKind::kAttr) {
      if (!is_known_method(callee->name)) {
        return error(callee->pos, "unsupported method '" + callee->name + "()'");
      }
    } else {
      return error(call->pos, "unsupported construct: calling the result of an expression");
    }
    call->args.push_back(std::move(callee));
    ANVIL_RETURN_IF_ERROR(parse_call_args(*call));
    return call;
  }

  Result<ExprPtr> parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        advance();
        const SourcePos pos = cur().pos;
        ANVIL_ASSIGN_OR_RETURN(std::string name, expect_name());
        if (!is_known_filter(name)) return error(pos, "unsupported filter '" + name + "'");
        auto f = make_expr(ExprKind::kFilter, pos);
        f->name = name;
        f->args.push_back(std::move(node));
        if (is_op("(")) ANVIL_RETURN_IF_ERROR(parse_call_args(*f));
        node = std::move(f);
      } else if (is_name("is")) {
        advance();
        auto t = make_expr(ExprKind::kTest, cur().pos);
        if (is_name("not")) {
          t->negated = true;
          advance();
        }
        const SourcePos pos = cur().pos;
        // `is none` etc.: the literal names are test names here.
        if (cur().kind != TokenKind::kName) return error(pos, "expected a test name after 'is'");
        std::string name = cur().text;
        advance();
        if (!is_known_test(name)) return error(pos, "unsupported test '" + name + "'");
        t->name = name;
        t->args.push_back(std::move(node));
        if (is_op("(")) {
          ANVIL_RETURN_IF_ERROR(parse_call_args(*t));
        } else if ((cur().kind == TokenKind::kName || cur().kind == TokenKind::kString ||
                    cur().kind == TokenKind::kInteger || cur().kind == TokenKind::kFloat || is_op("[") ||
                    is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          if (is_name("is")) return error(cur().pos, "tests cannot be chained with 'is'");
          ANVIL_ASSIGN_OR_RETURN(ExprPtr arg, parse_primary());
          ANVIL_ASSIGN_OR_RETURN(arg, parse_postfix(std::move(arg)));
          t->args.push_back(std::move(arg));
        }
        node = std::move(t);
      } else if (is_op("(")) {
        ANVIL_ASSIGN_OR_RETURN(node, parse_call(std::move(node)));
      } else {
        return node;
      }
    }
  }

  std::vector<Segment> segs_;
  size_t seg_ = 0;
  size_t tok_ = 0;
  int loop_depth_ = 0;
  std::set<std::string> macro_names_;
  std::vector<std::pair<std::string, SourcePos>> called_names_;
};

}  // namespace

Result<ParsedTemplate> parse_template(const std::string& source) {
  ANVIL_ASSIGN_OR_RETURN(std::vector<Segment> segments, lex_template(source, LexOptions{}));
  Parser parser(std::move(segments));
  return parser.run();
}

}  // namespace anvil::jinja
