// Syntax tree of a parsed template. Built once by the parser, read-only while rendering (so one
// ChatTemplate can render many requests at once). Nodes own their children.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja/lexer.h"
#include "tokenizer/jinja/value.h"

namespace anvil::jinja::ast {

enum class ExprKind {
  kLiteral,  // literal
  kName,     // name
  kList,     // [args...]
  kTuple,    // (args...)
  kDict,     // {args[0]: args[1], ...} (keys and values interleaved)
  kAttr,     // args[0].name
  kItem,     // args[0][args[1]]
  kSlice,    // args[0][args[1]:args[2]:args[3]] (null where omitted)
  kCall,     // args[0](args[1..], kwargs)
  kFilter,   // args[0] | name(args[1..], kwargs)
  kTest,     // args[0] is [not] name(args[1..])
  kNot,      // not args[0]
  kNeg,      // -args[0]
  kPos,      // +args[0]
  kBinary,   // args[0] op args[1]; op in + - * / // % ** ~
  kCompare,  // args[0] ops[0] args[1] ops[1] args[2] ... (chained)
  kAnd,
  kOr,
  kCond,  // args[1] if args[0] else args[2] (args[2] null: undefined)
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;
struct Expr {
  ExprKind kind = ExprKind::kLiteral;
  SourcePos pos;
  Value literal;
  std::string name;  // name, attribute, filter/test name or binary operator
  bool negated = false;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
};

enum class StmtKind { kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kBreak, kContinue, kBlock };

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Macro {
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // one per param, null where none
  Body body;
};

struct Stmt {
  StmtKind kind = StmtKind::kText;
  SourcePos pos;
  std::string text;  // kText
  ExprPtr expr;      // kOutput value, kSet value, kFor iterable
  // kIf: conditions[i] guards bodies[i]; bodies.back() is the else branch when
  // bodies.size() == conditions.size() + 1. kFor: bodies[0] loop body, bodies[1] else (optional).
  // kSetBlock / kBlock: bodies[0].
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  ExprPtr loop_filter;  // kFor: `for x in y if cond`
  // kFor loop variables / kSet targets (several for tuple unpacking); kSet on a namespace attribute
  // stores the namespace variable in targets[0] and the attribute in attr.
  std::vector<std::string> targets;
  std::string attr;
  std::unique_ptr<Macro> macro;  // kMacro
};

}  // namespace anvil::jinja::ast
