// Tree-walking evaluator for the Jinja subset (see interpreter.h). Python semantics for
// operators: int/float promotion, floor division and modulo rounding toward -inf, str/list
// concatenation and repetition, chained comparisons, and/or returning an operand.
#include "tokenizer/jinja/interpreter.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <new>
#include <stdexcept>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/py_string.h"

namespace anvil::jinja {

namespace {

using ast::Body;
using ast::Expr;
using ast::ExprKind;
using ast::Stmt;
using ast::StmtKind;

enum class Flow { kNormal, kBreak, kContinue };

Status type_error(const std::string& msg) { return invalid_argument("TypeError: " + msg); }

class Interpreter {
 public:
  Interpreter(std::vector<std::pair<std::string, Value>> globals, const RenderLimits& limits) : limits_(limits) {
    frames_.emplace_back();
    for (auto& [k, v] : globals) set_var(k, std::move(v));
  }

  Result<std::string> run(const Body& body) {
    std::string out;
    Result<Flow> r = exec_body(body, out);
    if (!r.is_ok()) {
      return Status(r.status().code(), "chat template error at " + describe(error_pos_) + ": " + r.status().message());
    }
    return out;
  }

 private:
  using Frame = std::vector<std::pair<std::string, Value>>;

  // ---- scopes ----

  const Value* find_var(const std::string& name) const {
    for (size_t i = frames_.size(); i-- > base_;) {
      for (const auto& [k, v] : frames_[i])
        if (k == name) return &v;
    }
    if (base_ > 0) {
      for (const auto& [k, v] : frames_[0])
        if (k == name) return &v;
    }
    return nullptr;
  }
  // The variables of the scopes above the template level (loop iterations, macro calls), flattened
  // innermost-wins: what a macro defined here closes over.
  Frame visible_locals() const {
    Frame out;
    const size_t lowest = std::max<size_t>(base_, 1);
    for (size_t i = frames_.size(); i-- > lowest;) {
      for (const auto& [k, v] : frames_[i]) {
        bool shadowed = false;
        for (const auto& [ok, ov] : out) shadowed = shadowed || ok == k;
        if (!shadowed) out.emplace_back(k, v);
      }
    }
    return out;
  }
  void set_var(const std::string& name, Value v) {
    for (auto& [k, old] : frames_.back()) {
      if (k == name) {
        old = std::move(v);
        return;
      }
    }
    frames_.back().emplace_back(name, std::move(v));
  }

  Status note(const Status& s, SourcePos pos) {
    if (!s.is_ok() && !error_pos_set_) {
      error_pos_ = pos;
      error_pos_set_ = true;
    }
    return s;
  }
  Status step() {
    if (++steps_ > limits_.max_steps) {
      return invalid_argument("template exceeded its work limit of " + std::to_string(limits_.max_steps) + " steps");
    }
    return Status::ok();
  }
  Status check_size(size_t n) const {
    if (n > limits_.max_output_bytes) {
      return invalid_argument("template output exceeds " + std::to_string(limits_.max_output_bytes) + " bytes");
    }
    return Status::ok();
  }

  // ---- statements ----

  Result<Flow> exec_body(const Body& body, std::string& out) {
    for (const auto& s : body) {
      Result<Flow> r = exec(*s, out);
      if (!r.is_ok()) return note(r.status(), s->pos);
      if (*r != Flow::kNormal) return *r;
    }
    return Flow::kNormal;
  }

  Result<Flow> exec(const Stmt& s, std::string& out) {
    switch (s.kind) {
      case StmtKind::kText:
        out += s.text;
        ANVIL_RETURN_IF_ERROR(check_size(out.size()));
        return Flow::kNormal;
      case StmtKind::kOutput: {
        ANVIL_ASSIGN_OR_RETURN(Value v, eval(*s.expr));
        out += to_str(v);
        ANVIL_RETURN_IF_ERROR(step());
        ANVIL_RETURN_IF_ERROR(check_size(out.size()));
        return Flow::kNormal;
      }
      case StmtKind::kIf: {
        for (size_t i = 0; i < s.conditions.size(); ++i) {
          ANVIL_ASSIGN_OR_RETURN(Value c, eval(*s.conditions[i]));
          if (truthy(c)) return exec_body(s.bodies[i], out);
        }
        if (s.bodies.size() > s.conditions.size()) return exec_body(s.bodies.back(), out);
        return Flow::kNormal;
      }
      case StmtKind::kFor:
        return exec_for(s, out);
      case StmtKind::kSet: {
        ANVIL_ASSIGN_OR_RETURN(Value v, eval(*s.expr));
        return assign(s, std::move(v));
      }
      case StmtKind::kSetBlock: {
        std::string inner;
        frames_.emplace_back();
        Result<Flow> r = exec_body(s.bodies[0], inner);
        frames_.pop_back();
        if (!r.is_ok()) return r.status();
        set_var(s.targets[0], Value::string(std::move(inner)));
        return Flow::kNormal;
      }
      case StmtKind::kMacro:
        set_var(s.macro->name, Value::macro(MacroData{s.macro.get(), visible_locals()}));
        return Flow::kNormal;
      case StmtKind::kBreak:
        return Flow::kBreak;
      case StmtKind::kContinue:
        return Flow::kContinue;
      case StmtKind::kBlock: {
        frames_.emplace_back();
        Result<Flow> r = exec_body(s.bodies[0], out);
        frames_.pop_back();
        return r;
      }
    }
    return internal_error("unknown statement kind");
  }

  Result<Flow> assign(const Stmt& s, Value v) {
    if (!s.attr.empty()) {
      const Value* target = find_var(s.targets[0]);
      if (!target || target->kind() != ValueKind::kNamespace) {
        return invalid_argument("TemplateRuntimeError: cannot assign attribute on non-namespace object '" +
                                s.targets[0] + "'");
      }
      if (s.attr[0] == '_') {
        return invalid_argument("SecurityError: Chat templates cannot store underscore-prefixed attributes on a "
                                "namespace, but got '" + s.attr + "'. Please rename the attribute.");
      }
      target->ns().set(s.attr, std::move(v));
      return Flow::kNormal;
    }
    if (s.targets.size() == 1) {
      set_var(s.targets[0], std::move(v));
      return Flow::kNormal;
    }
    ANVIL_ASSIGN_OR_RETURN(std::vector<Value> parts, unpack(v, s.targets.size()));
    for (size_t i = 0; i < parts.size(); ++i) set_var(s.targets[i], std::move(parts[i]));
    return Flow::kNormal;
  }

  Result<std::vector<Value>> unpack(const Value& v, size_t n) {
    ANVIL_ASSIGN_OR_RETURN(std::vector<Value> parts, iterate(v));
    if (parts.size() < n) {
      return invalid_argument("ValueError: not enough values to unpack (expected " + std::to_string(n) + ", got " +
                              std::to_string(parts.size()) + ")");
    }
    if (parts.size() > n) {
      return invalid_argument("ValueError: too many values to unpack (expected " + std::to_string(n) + ")");
    }
    return parts;
  }

  Result<Flow> exec_for(const Stmt& s, std::string& out) {
    ANVIL_ASSIGN_OR_RETURN(Value seq, eval(*s.expr));
    ANVIL_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(seq));
    if (s.loop_filter) {
      std::vector<Value> kept;
      for (Value& item : items) {
        frames_.emplace_back();
        Result<Flow> bound = bind_targets(s, item);
        Result<Value> keep = bound.is_ok() ? eval(*s.loop_filter) : Result<Value>(bound.status());
        frames_.pop_back();
        if (!keep.is_ok()) return keep.status();
        if (truthy(*keep)) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    const auto n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      ANVIL_RETURN_IF_ERROR(step());
      DictData loop;
      loop.is_loop = true;
      auto put = [&](const char* k, Value v) { loop.entries.emplace_back(Value::string(k), std::move(v)); };
      put("index", Value::integer(i + 1));
      put("index0", Value::integer(i));
      put("revindex", Value::integer(n - i));
      put("revindex0", Value::integer(n - i - 1));
      put("first", Value::boolean(i == 0));
      put("last", Value::boolean(i == n - 1));
      put("length", Value::integer(n));
      put("depth", Value::integer(1));
      put("depth0", Value::integer(0));
      put("previtem", i > 0 ? items[static_cast<size_t>(i - 1)] : Value::undefined("there is no previous item"));
      put("nextitem", i + 1 < n ? items[static_cast<size_t>(i + 1)] : Value::undefined("there is no next item"));
      frames_.emplace_back();
      set_var("loop", Value::dict(std::move(loop)));
      Result<Flow> r = bind_targets(s, items[static_cast<size_t>(i)]);
      if (r.is_ok()) r = exec_body(s.bodies[0], out);
      frames_.pop_back();
      if (!r.is_ok()) return r.status();
      if (*r == Flow::kBreak) break;
    }
    if (n == 0 && s.bodies.size() > 1) return exec_body(s.bodies[1], out);
    return Flow::kNormal;
  }

  Result<Flow> bind_targets(const Stmt& s, const Value& item) {
    if (s.targets.size() == 1) {
      set_var(s.targets[0], item);
      return Flow::kNormal;
    }
    ANVIL_ASSIGN_OR_RETURN(std::vector<Value> parts, unpack(item, s.targets.size()));
    for (size_t i = 0; i < parts.size(); ++i) set_var(s.targets[i], std::move(parts[i]));
    return Flow::kNormal;
  }

  // ---- expressions ----

  Result<Value> eval(const Expr& e) {
    Result<Value> r = eval_inner(e);
    if (!r.is_ok()) return note(r.status(), e.pos);
    return r;
  }

  Result<CallArgs> eval_args(const Expr& e, size_t first) {
    CallArgs args;
    for (size_t i = first; i < e.args.size(); ++i) {
      ANVIL_ASSIGN_OR_RETURN(Value v, eval(*e.args[i]));
      args.positional.push_back(std::move(v));
    }
    for (const auto& [k, x] : e.kwargs) {
      ANVIL_ASSIGN_OR_RETURN(Value v, eval(*x));
      args.keyword.emplace_back(k, std::move(v));
    }
    return args;
  }

  Result<Value> eval_inner(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kLiteral:
        return e.literal;
      case ExprKind::kName: {
        const Value* v = find_var(e.name);
        if (v) return *v;
        return Value::undefined("'" + e.name + "' is undefined");
      }
      case ExprKind::kList:
      case ExprKind::kTuple: {
        std::vector<Value> items;
        for (const auto& a : e.args) {
          ANVIL_ASSIGN_OR_RETURN(Value v, eval(*a));
          items.push_back(std::move(v));
        }
        return Value::list(std::move(items), e.kind == ExprKind::kTuple);
      }
      case ExprKind::kDict: {
        DictData d;
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          ANVIL_ASSIGN_OR_RETURN(Value k, eval(*e.args[i]));
          ANVIL_ASSIGN_OR_RETURN(Value v, eval(*e.args[i + 1]));
          if (k.is_list() && !k.is_tuple()) return type_error("unhashable type: 'list'");
          if (k.is_dict()) return type_error("unhashable type: 'dict'");
          bool replaced = false;
          for (auto& [ek, ev] : d.entries) {
            if (equals(ek, k)) {
              ev = v;
              replaced = true;
            }
          }
          if (!replaced) d.entries.emplace_back(std::move(k), std::move(v));
        }
        return Value::dict(std::move(d));
      }
      case ExprKind::kAttr: {
        ANVIL_ASSIGN_OR_RETURN(Value obj, eval(*e.args[0]));
        return get_attr(obj, e.name);
      }
      case ExprKind::kItem: {
        ANVIL_ASSIGN_OR_RETURN(Value obj, eval(*e.args[0]));
        ANVIL_ASSIGN_OR_RETURN(Value key, eval(*e.args[1]));
        return get_item(obj, key);
      }
      case ExprKind::kSlice:
        return eval_slice(e);
      case ExprKind::kCall:
        return eval_call(e);
      case ExprKind::kFilter: {
        ANVIL_ASSIGN_OR_RETURN(Value v, eval(*e.args[0]));
        ANVIL_ASSIGN_OR_RETURN(CallArgs args, eval_args(e, 1));
        return apply_filter(e.name, v, args);
      }
      case ExprKind::kTest: {
        ANVIL_ASSIGN_OR_RETURN(Value v, eval(*e.args[0]));
        ANVIL_ASSIGN_OR_RETURN(CallArgs args, eval_args(e, 1));
        ANVIL_ASSIGN_OR_RETURN(bool r, apply_test(e.name, v, args));
        return Value::boolean(r != e.negated);
      }
      case ExprKind::kNot: {
        ANVIL_ASSIGN_OR_RETURN(Value v, eval(*e.args[0]));
        return Value::boolean(!truthy(v));
      }
      case ExprKind::kNeg:
      case ExprKind::kPos: {
        ANVIL_ASSIGN_OR_RETURN(Value v, eval(*e.args[0]));
        if (v.is_undefined()) return undefined_error(v);
        const bool neg = e.kind == ExprKind::kNeg;
        if (v.is_integral()) return Value::integer(neg ? -v.as_int() : v.as_int());
        if (v.kind() == ValueKind::kFloat) return Value::floating(neg ? -v.as_float() : v.as_float());
        return type_error(std::string("bad operand type for unary ") + (neg ? "-" : "+") + ": '" + type_name(v) + "'");
      }
      case ExprKind::kBinary: {
        ANVIL_ASSIGN_OR_RETURN(Value a, eval(*e.args[0]));
        ANVIL_ASSIGN_OR_RETURN(Value b, eval(*e.args[1]));
        return binary(e.name, a, b);
      }
      case ExprKind::kCompare: {
        ANVIL_ASSIGN_OR_RETURN(Value left, eval(*e.args[0]));
        for (size_t i = 0; i < e.ops.size(); ++i) {
          ANVIL_ASSIGN_OR_RETURN(Value right, eval(*e.args[i + 1]));
          ANVIL_ASSIGN_OR_RETURN(bool ok, compare(e.ops[i], left, right));
          if (!ok) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      case ExprKind::kAnd:
      case ExprKind::kOr: {
        ANVIL_ASSIGN_OR_RETURN(Value a, eval(*e.args[0]));
        if (truthy(a) == (e.kind == ExprKind::kOr)) return a;
        return eval(*e.args[1]);
      }
      case ExprKind::kCond: {
        ANVIL_ASSIGN_OR_RETURN(Value c, eval(*e.args[0]));
        if (truthy(c)) return eval(*e.args[1]);
        if (e.args[2]) return eval(*e.args[2]);
        return Value::undefined("the inline if-expression on " + describe(e.pos) +
                                " evaluated to false and no else section was defined.");
      }
    }
    return internal_error("unknown expression kind");
  }

  Result<Value> eval_slice(const Expr& e) {
    ANVIL_ASSIGN_OR_RETURN(Value obj, eval(*e.args[0]));
    std::optional<int64_t> bounds[3];
    for (int i = 0; i < 3; ++i) {
      if (!e.args[i + 1]) continue;
      ANVIL_ASSIGN_OR_RETURN(Value b, eval(*e.args[i + 1]));
      if (b.is_none()) continue;
      if (!b.is_integral()) return type_error("slice indices must be integers or None");
      bounds[i] = b.as_int();
    }
    const int64_t step = bounds[2].value_or(1);
    if (step == 0) return invalid_argument("ValueError: slice step cannot be zero");
    if (obj.is_undefined()) return undefined_error(obj);
    if (obj.is_string()) {
      const std::u32string cps = decode_utf8(obj.as_string());
      std::u32string sel;
      for (int64_t i : py_slice_indices(static_cast<int64_t>(cps.size()), bounds[0], bounds[1], step))
        sel.push_back(cps[static_cast<size_t>(i)]);
      return Value::string(encode_utf8(sel));
    }
    if (obj.is_list()) {
      std::vector<Value> sel;
      for (int64_t i : py_slice_indices(static_cast<int64_t>(obj.items().size()), bounds[0], bounds[1], step))
        sel.push_back(obj.items()[static_cast<size_t>(i)]);
      return Value::list(std::move(sel), obj.is_tuple());
    }
    return type_error(std::string("'") + type_name(obj) + "' object is not subscriptable");
  }

  Result<Value> eval_call(const Expr& e) {
    const Expr& callee = *e.args[0];
    ANVIL_ASSIGN_OR_RETURN(CallArgs args, eval_args(e, 1));
    if (callee.kind == ExprKind::kAttr) {
      ANVIL_ASSIGN_OR_RETURN(Value obj, eval(*callee.args[0]));
      return call_method(obj, callee.name, args);
    }
    const Value* v = find_var(callee.name);
    if (v && v->kind() == ValueKind::kMacro) return call_macro(v->macro(), args);
    if (v && !v->is_undefined()) return type_error("'" + std::string(type_name(*v)) + "' object is not callable");
    return call_global(callee.name, args);
  }

  Result<Value> call_macro(const MacroData& macro, const CallArgs& args) {
    const ast::Macro& m = *macro.def;
    ANVIL_RETURN_IF_ERROR(step());
    if (macro_depth_ >= limits_.max_macro_depth) {
      return invalid_argument("macro calls nested deeper than " + std::to_string(limits_.max_macro_depth));
    }
    std::vector<std::string_view> params(m.params.begin(), m.params.end());
    ANVIL_ASSIGN_OR_RETURN(auto bound, bind_args(m.name, args, params));
    const size_t saved_base = base_;
    frames_.push_back(macro.closure);
    base_ = frames_.size() - 1;
    frames_.emplace_back();
    ++macro_depth_;
    Status status;
    for (size_t i = 0; i < params.size() && status.is_ok(); ++i) {
      if (bound[i]) {
        set_var(m.params[i], *bound[i]);
      } else if (m.defaults[i]) {
        Result<Value> d = eval(*m.defaults[i]);
        if (d.is_ok()) {
          set_var(m.params[i], *d);
        } else {
          status = d.status();
        }
      } else {
        set_var(m.params[i], Value::undefined("parameter '" + m.params[i] + "' was not provided"));
      }
    }
    std::string out;
    if (status.is_ok()) {
      Result<Flow> r = exec_body(m.body, out);
      if (!r.is_ok()) status = r.status();
    }
    --macro_depth_;
    frames_.pop_back();
    frames_.pop_back();
    base_ = saved_base;
    ANVIL_RETURN_IF_ERROR(status);
    return Value::string(std::move(out));
  }

  Result<bool> compare(const std::string& op, const Value& a, const Value& b) {
    if (op == "==") return equals(a, b);
    if (op == "!=") return !equals(a, b);
    if (op == "<") return less_than(a, b);
    if (op == ">") return less_than(b, a);
    if (op == "<=") {
      ANVIL_ASSIGN_OR_RETURN(bool gt, less_than(b, a));
      return !gt;
    }
    if (op == ">=") {
      ANVIL_ASSIGN_OR_RETURN(bool lt, less_than(a, b));
      return !lt;
    }
    CallArgs args;
    args.positional.push_back(b);
    if (b.is_none()) return type_error("argument of type 'NoneType' is not iterable");
    ANVIL_ASSIGN_OR_RETURN(bool in, apply_test("in", a, args));
    return op == "in" ? in : !in;
  }

  Result<Value> binary(const std::string& op, const Value& a, const Value& b) {
    if (op == "~") {
      std::string s = to_str(a) + to_str(b);
      ANVIL_RETURN_IF_ERROR(check_size(s.size()));
      return Value::string(std::move(s));
    }
    if (a.is_undefined()) return undefined_error(a);
    if (b.is_undefined()) return undefined_error(b);
    if (a.is_number() && b.is_number()) return arithmetic(op, a, b);
    if (op == "+") {
      if (a.is_string() && b.is_string()) {
        ANVIL_RETURN_IF_ERROR(check_size(a.as_string().size() + b.as_string().size()));
        return Value::string(a.as_string() + b.as_string());
      }
      if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
        ANVIL_RETURN_IF_ERROR(check_size((a.items().size() + b.items().size()) * sizeof(Value)));
        std::vector<Value> items = a.items();
        items.insert(items.end(), b.items().begin(), b.items().end());
        return Value::list(std::move(items), a.is_tuple());
      }
      if (a.is_string()) return type_error(std::string("can only concatenate str (not \"") + type_name(b) + "\") to str");
    }
    if (op == "*" && (a.is_integral() || b.is_integral()) && (a.is_string() || b.is_string() || a.is_list() || b.is_list())) {
      const Value& seq = a.is_integral() ? b : a;
      const int64_t times = std::max<int64_t>(0, (a.is_integral() ? a : b).as_int());
      const size_t unit = seq.is_string() ? seq.as_string().size() : seq.items().size() * sizeof(Value);
      if (unit > 0 && static_cast<uint64_t>(times) > limits_.max_output_bytes / unit) {
        return check_size(limits_.max_output_bytes + 1);
      }
      if (seq.is_string()) {
        std::string out;
        for (int64_t i = 0; i < times; ++i) out += seq.as_string();
        return Value::string(std::move(out));
      }
      std::vector<Value> items;
      for (int64_t i = 0; i < times; ++i) items.insert(items.end(), seq.items().begin(), seq.items().end());
      return Value::list(std::move(items), seq.is_tuple());
    }
    return type_error("unsupported operand type(s) for " + op + ": '" + type_name(a) + "' and '" + type_name(b) + "'");
  }

  static Result<Value> arithmetic(const std::string& op, const Value& a, const Value& b) {
    const bool ints = a.is_integral() && b.is_integral();
    if (ints && op != "/") {
      const int64_t x = a.as_int();
      const int64_t y = b.as_int();
      int64_t r = 0;
      if (op == "+" && !__builtin_add_overflow(x, y, &r)) return Value::integer(r);
      if (op == "-" && !__builtin_sub_overflow(x, y, &r)) return Value::integer(r);
      if (op == "*" && !__builtin_mul_overflow(x, y, &r)) return Value::integer(r);
      if (op == "//" || op == "%") {
        if (y == 0) return invalid_argument("ZeroDivisionError: integer division or modulo by zero");
        if (x == std::numeric_limits<int64_t>::min() && y == -1) return invalid_argument("integer overflow");
        int64_t q = x / y;
        int64_t m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          --q;
          m += y;
        }
        return Value::integer(op == "//" ? q : m);
      }
      if (op == "**" && y >= 0) {
        int64_t acc = 1;
        bool overflow = false;
        for (int64_t i = 0; i < y && !overflow; ++i) {
          overflow = __builtin_mul_overflow(acc, x, &acc);
          if (acc == 0 || acc == 1) break;
        }
        if (!overflow) return Value::integer(acc);
      }
      if (op != "**") return invalid_argument("integer overflow in '" + op + "'");
    }
    const double x = a.as_float();
    const double y = b.as_float();
    if (op == "+") return Value::floating(x + y);
    if (op == "-") return Value::floating(x - y);
    if (op == "*") return Value::floating(x * y);
    if (op == "**") return Value::floating(std::pow(x, y));
    if (y == 0) return invalid_argument("ZeroDivisionError: division by zero");
    if (op == "/") return Value::floating(x / y);
    if (op == "//") return Value::floating(std::floor(x / y));
    if (op == "%") {
      double m = std::fmod(x, y);
      if (m != 0 && ((m < 0) != (y < 0))) m += y;
      return Value::floating(m);
    }
    return invalid_argument("unsupported operator '" + op + "'");
  }

  RenderLimits limits_;
  std::vector<Frame> frames_;
  size_t base_ = 0;
  int macro_depth_ = 0;
  int64_t steps_ = 0;
  SourcePos error_pos_;
  bool error_pos_set_ = false;
};

}  // namespace

Result<std::string> render_template(const ast::Body& body, std::vector<std::pair<std::string, Value>> globals,
                                    const RenderLimits& limits) {
  Interpreter interp(std::move(globals), limits);
  // Size checks bound every string and list the template builds; this is the last line of defence
  // should some combination still ask for more memory than the machine has.
  try {
    return interp.run(body);
  } catch (const std::bad_alloc&) {
    return out_of_memory("chat template: rendering ran out of memory");
  } catch (const std::length_error&) {
    return out_of_memory("chat template: rendering built an oversized string");
  }
}

}  // namespace anvil::jinja
