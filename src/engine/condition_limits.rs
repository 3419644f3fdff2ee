//! Limits on CEL conditions (DESIGN §12): nothing a definition or a variable holds may make a
//! condition crash the server, run for seconds or exhaust memory.
//!
//! cel 0.15 offers no evaluation budget (no cost tracking, no interruption), and its parser,
//! macro expander and interpreter recurse over the expression. So the limits are ours, in three
//! layers:
//!
//! 1. **Before parsing** ([`screen_source`]): the raw text is bounded in length, bracket
//!    nesting and number of operators. The parser never sees `1 + 1 + …` of 6,000 terms, whose
//!    6,000-deep tree overflowed the stack. Real approval conditions are one line with a handful
//!    of operators (`amount > 10000 && manager_approval.outcome == "approve"` has three); the
//!    limits are an order of magnitude above anything a modeller writes.
//! 2. **After parsing** ([`check_shape`]): the tree is at most [`MAX_TREE_DEPTH`] deep (so every
//!    recursive walk over it, cel's and ours, has a small bounded stack) and a comprehension
//!    (`all`, `exists`, `exists_one`, `map`, `filter`) may not contain another one. Nesting is
//!    what turns a list of n items into n², n³… steps (the 19 s expression); one level keeps the
//!    work proportional to the size of the data.
//! 3. **Before every evaluation** ([`estimate`]): with the actual sizes of the variables the
//!    expression reads, a worst-case cost and the largest value it can build are computed from
//!    the tree, and the evaluation is refused when either is over budget. Every operation is
//!    charged the size of its operands (copying, comparing, concatenating); a comprehension is
//!    charged its body once per element. Because nesting is refused, the estimate is a
//!    polynomial of degree at most two in the variables' size and is never far above the real
//!    cost of the expressions anyone writes, while `s + s + …` over a large string or a
//!    `map` that copies a big value per element is refused before it allocates anything.
//!
//! Costs are in "units", roughly bytes touched: a string counts its bytes, every other scalar
//! one unit, a list or map one unit plus its contents.

use std::collections::HashMap;

use cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, LiteralValue, operators};
use cel::parser::Expression;
use serde_json::Value as Json;

/// Longest condition accepted, in characters.
pub const MAX_SOURCE_CHARS: usize = 2_000;
/// Deepest nesting of `(`, `[` and `{`.
pub const MAX_NESTING: usize = 32;
/// Most operators (`+ - * / % == != < <= > >= && || ! ?: in`, member access `.` and index `[`).
pub const MAX_OPERATORS: usize = 100;
/// Deepest expression tree after parsing (macros expand a little beyond the source's nesting).
pub const MAX_TREE_DEPTH: usize = 160;
/// The worst-case cost one evaluation may have.
/// (Measured in a debug build: 15 to 45 ms for the costliest conditions that fit, see
/// `condition::tests::measure_conditions_near_the_budget`.)
pub const MAX_EVALUATION_COST: u64 = 2_000_000;
/// What every element of a comprehension is charged besides its step: cel opens a scope and
/// copies the element (measured: about a microsecond per element in a debug build).
const ITERATION_COST: u64 = 100;
/// What one `matches` call is charged for compiling its pattern, besides the pattern's size.
const REGEX_COMPILE_COST: u64 = 50_000;
/// The largest value (string, list, map) one evaluation may build, in units.
pub const MAX_VALUE_SIZE: u64 = 1_000_000;

/// Checks the raw text before the CEL parser sees it.
pub fn screen_source(source: &str) -> Result<(), String> {
    let chars = source.chars().count();
    if chars > MAX_SOURCE_CHARS {
        return Err(format!(
            "the expression has {chars} characters; at most {MAX_SOURCE_CHARS} are accepted"
        ));
    }
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut operators = 0usize;
    let mut previous = ' ';
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut iter = source.chars().peekable();
    while let Some(ch) = iter.next() {
        if let Some(q) = quote {
            // Inside a string literal nothing counts; a backslash escapes the next character.
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == q {
                quote = None;
            }
            previous = ch;
            continue;
        }
        match ch {
            '"' | '\'' => quote = Some(ch),
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
                if ch == '[' {
                    operators += 1;
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            // Member access, but not the point of a number (`1.5`).
            '.' if !iter.peek().is_some_and(char::is_ascii_digit) => operators += 1,
            '+' | '-' | '*' | '/' | '%' | '?' | '!' => operators += 1,
            '<' | '>' | '=' => {
                // `<=`, `>=`, `==` are one operator; `!=` was counted at `!`.
                if iter.peek() == Some(&'=') {
                    iter.next();
                }
                if ch != '=' || previous != '!' {
                    operators += 1;
                }
            }
            '&' | '|' => {
                if iter.peek() == Some(&ch) {
                    iter.next();
                }
                operators += 1;
            }
            'i' if !is_ident_char(previous)
                && iter.peek() == Some(&'n')
                && source_word_ends_after_in(&iter) =>
            {
                operators += 1;
            }
            _ => {}
        }
        previous = ch;
    }
    if deepest > MAX_NESTING {
        return Err(format!(
            "brackets nest {deepest} deep; at most {MAX_NESTING} are accepted"
        ));
    }
    if operators > MAX_OPERATORS {
        return Err(format!(
            "the expression has {operators} operators; at most {MAX_OPERATORS} are accepted"
        ));
    }
    Ok(())
}

fn is_ident_char(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// After an `i` whose next character is `n`: is `in` a whole word?
fn source_word_ends_after_in(iter: &std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    let mut ahead = iter.clone();
    ahead.next();
    ahead.next().is_none_or(|ch| !is_ident_char(ch))
}

/// Checks the parsed tree: bounded depth and no comprehension inside another. Walks with an
/// explicit stack so that a tree deeper than the limit is measured, not recursed into.
pub fn check_shape(root: &Expression) -> Result<(), String> {
    // (node, depth, comprehensions around it)
    let mut stack: Vec<(&Expression, usize, usize)> = vec![(root, 1, 0)];
    while let Some((node, depth, comprehensions)) = stack.pop() {
        if depth > MAX_TREE_DEPTH {
            return Err(format!(
                "the expression nests more than {MAX_TREE_DEPTH} levels deep"
            ));
        }
        let mut inside = comprehensions;
        if let Expr::Comprehension(_) = &node.expr {
            if comprehensions >= 1 {
                return Err(
                    "a comprehension (all, exists, exists_one, map, filter) inside another is not \
                     accepted: its cost grows with the product of the lists' sizes"
                        .to_owned(),
                );
            }
            inside += 1;
        }
        for child in children(node) {
            stack.push((child, depth + 1, inside));
        }
    }
    Ok(())
}

pub(super) fn children(node: &Expression) -> Vec<&Expression> {
    match &node.expr {
        Expr::Call(call) => call
            .target
            .as_deref()
            .into_iter()
            .chain(&call.args)
            .collect(),
        Expr::Comprehension(c) => comprehension_parts(c).to_vec(),
        Expr::List(list) => list.elements.iter().collect(),
        Expr::Map(map) => entry_parts(map.entries.iter().map(|e| &e.expr)),
        Expr::Struct(s) => entry_parts(s.entries.iter().map(|e| &e.expr)),
        Expr::Select(select) => vec![&select.operand],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

fn comprehension_parts(c: &ComprehensionExpr) -> [&Expression; 5] {
    [
        &c.iter_range,
        &c.accu_init,
        &c.loop_cond,
        &c.loop_step,
        &c.result,
    ]
}

fn entry_parts<'e>(entries: impl Iterator<Item = &'e EntryExpr>) -> Vec<&'e Expression> {
    entries
        .flat_map(|entry| match entry {
            EntryExpr::MapEntry(e) => vec![&e.key, &e.value],
            EntryExpr::StructField(f) => vec![&f.value],
        })
        .collect()
}

/// An upper bound of a value: its size in units, and the most elements any list or map in it
/// has (what a comprehension over it, or over a part of it, iterates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    pub size: u64,
    pub count: u64,
}

/// The shape of a JSON value, measured without recursion (stored variables may nest as deep as
/// serde_json allows).
pub fn json_shape(value: &Json) -> Shape {
    let mut shape = Shape::default();
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        shape.size = shape.size.saturating_add(1);
        match value {
            Json::String(text) => shape.size = shape.size.saturating_add(text.len() as u64),
            Json::Array(items) => {
                shape.count = shape.count.max(items.len() as u64);
                stack.extend(items);
            }
            Json::Object(entries) => {
                shape.count = shape.count.max(entries.len() as u64);
                for (key, value) in entries {
                    shape.size = shape.size.saturating_add(key.len() as u64);
                    stack.push(value);
                }
            }
            Json::Null | Json::Bool(_) | Json::Number(_) => {}
        }
    }
    shape
}

/// What one evaluation may cost at worst, and the largest value it may build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub cost: u64,
    pub largest_value: u64,
}

impl Estimate {
    /// Why this estimate is over budget, if it is.
    pub fn over_budget(&self, budget: u64) -> Option<String> {
        if self.largest_value > MAX_VALUE_SIZE {
            return Some(format!(
                "with these variables it could build a value of {} units, more than the limit \
                 of {MAX_VALUE_SIZE}",
                self.largest_value
            ));
        }
        if self.cost > budget {
            return Some(format!(
                "with these variables it could cost {} units, more than the {budget} left of \
                 the evaluation budget",
                self.cost
            ));
        }
        None
    }
}

/// The worst case of evaluating `root` when each top-level variable has the shape `shapes`
/// gives (an unknown variable is an error at evaluation, so it costs nothing here). The tree has
/// passed [`check_shape`], so this recursion is bounded by [`MAX_TREE_DEPTH`].
pub fn estimate(root: &Expression, shapes: &HashMap<&str, Shape>) -> Estimate {
    let mut estimator = Estimator {
        shapes,
        scopes: Vec::new(),
        accumulator: None,
        largest: 0,
    };
    let top = estimator.node(root);
    Estimate {
        cost: top.cost,
        largest_value: estimator.largest,
    }
}

#[derive(Debug, Clone, Copy)]
struct Cost {
    /// Upper bound of the value's size and element count.
    shape: Shape,
    /// Upper bound of the work to compute it.
    cost: u64,
}

impl Cost {
    fn scalar(cost: u64) -> Cost {
        Cost {
            shape: Shape { size: 1, count: 0 },
            cost,
        }
    }
}

struct Estimator<'a> {
    shapes: &'a HashMap<&'a str, Shape>,
    /// Comprehension variables in scope, innermost last.
    scopes: Vec<(String, Shape)>,
    /// The accumulator of the comprehension whose step is being estimated.
    accumulator: Option<String>,
    largest: u64,
}

impl Estimator<'_> {
    fn node(&mut self, node: &Expression) -> Cost {
        let result = match &node.expr {
            Expr::Literal(literal) => Cost {
                shape: Shape {
                    size: literal_size(literal),
                    count: 0,
                },
                cost: 1,
            },
            Expr::Ident(name) => Cost {
                shape: self.ident_shape(name),
                cost: 1,
            },
            Expr::Select(select) => {
                let operand = self.node(&select.operand);
                Cost {
                    shape: operand.shape,
                    cost: operand.cost.saturating_add(1),
                }
            }
            Expr::Call(call) => {
                let parts: Vec<Cost> = call
                    .target
                    .as_deref()
                    .into_iter()
                    .chain(&call.args)
                    .map(|part| self.node(part))
                    .collect();
                let appends_to_accumulator = call.func_name == operators::ADD
                    && matches!(
                        (call.args.first().map(|a| &a.expr), &self.accumulator),
                        (Some(Expr::Ident(name)), Some(accu)) if name == accu
                    );
                call_cost(&call.func_name, &parts, appends_to_accumulator)
            }
            Expr::List(list) => {
                let parts: Vec<Cost> = list.elements.iter().map(|e| self.node(e)).collect();
                aggregate(&parts, parts.len())
            }
            Expr::Map(map) => {
                let parts: Vec<Cost> = entry_parts(map.entries.iter().map(|e| &e.expr))
                    .into_iter()
                    .map(|e| self.node(e))
                    .collect();
                aggregate(&parts, map.entries.len())
            }
            Expr::Struct(s) => {
                let parts: Vec<Cost> = entry_parts(s.entries.iter().map(|e| &e.expr))
                    .into_iter()
                    .map(|e| self.node(e))
                    .collect();
                aggregate(&parts, s.entries.len())
            }
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Unspecified => Cost::scalar(1),
        };
        self.largest = self.largest.max(result.shape.size);
        result
    }

    fn ident_shape(&self, name: &str) -> Shape {
        if let Some((_, shape)) = self.scopes.iter().rev().find(|(n, _)| n == name) {
            return *shape;
        }
        self.shapes.get(name).copied().unwrap_or_default()
    }

    /// The range is walked once; the loop condition and step once per element. Elements share
    /// the range's size: the cost of a step grows with its element's size at most polynomially
    /// with non-negative coefficients (a convex function), so n elements summing to S cost at
    /// most one element of size S plus n elements of size 1. The accumulator grows the same way.
    fn comprehension(&mut self, c: &ComprehensionExpr) -> Cost {
        let range = self.node(&c.iter_range);
        let init = self.node(&c.accu_init);
        let elements = range.shape.count;
        let whole = range.shape;
        let one = Shape { size: 1, count: 0 };
        let (big, _) = self.step(c, whole, init.shape);
        let (small, _) = self.step(c, one, init.shape);
        let growth = big
            .shape
            .size
            .saturating_sub(init.shape.size)
            .saturating_add(
                elements.saturating_mul(small.shape.size.saturating_sub(init.shape.size)),
            );
        let accumulator = Shape {
            size: init.shape.size.saturating_add(growth),
            // `map` and `filter` add at most one item per element.
            count: init.shape.count.saturating_add(elements),
        };
        self.largest = self.largest.max(accumulator.size);
        let (big_step, big_condition) = self.step(c, whole, accumulator);
        let (small_step, small_condition) = self.step(c, one, accumulator);
        self.scopes.push((c.accu_var.clone(), accumulator));
        let result = self.node(&c.result);
        self.scopes.pop();
        let per_element = small_step
            .cost
            .saturating_add(small_condition.cost)
            .saturating_add(ITERATION_COST);
        Cost {
            shape: result.shape,
            cost: range
                .cost
                .saturating_add(init.cost)
                .saturating_add(big_step.cost)
                .saturating_add(big_condition.cost)
                .saturating_add(elements.saturating_mul(per_element))
                .saturating_add(result.cost),
        }
    }

    /// One loop step and loop condition with an element of shape `element` and an accumulator
    /// of shape `accumulator`.
    fn step(&mut self, c: &ComprehensionExpr, element: Shape, accumulator: Shape) -> (Cost, Cost) {
        let depth = self.scopes.len();
        self.scopes.push((c.iter_var.clone(), element));
        if let Some(second) = &c.iter_var2 {
            self.scopes.push((second.clone(), element));
        }
        self.scopes.push((c.accu_var.clone(), accumulator));
        let saved = self.accumulator.replace(c.accu_var.clone());
        let step = self.node(&c.loop_step);
        let condition = self.node(&c.loop_cond);
        self.accumulator = saved;
        self.scopes.truncate(depth);
        (step, condition)
    }
}

fn literal_size(literal: &LiteralValue) -> u64 {
    match literal {
        LiteralValue::String(text) => 1 + text.inner().len() as u64,
        LiteralValue::Bytes(bytes) => 1 + bytes.inner().len() as u64,
        _ => 1,
    }
}

/// A list or map literal of `entries` entries: its parts, plus one unit per part.
fn aggregate(parts: &[Cost], entries: usize) -> Cost {
    let size = parts.iter().fold(1u64, |total, part| {
        total.saturating_add(part.shape.size).saturating_add(1)
    });
    let count = parts
        .iter()
        .fold(entries as u64, |most, part| most.max(part.shape.count));
    let cost = parts
        .iter()
        .fold(size, |total, part| total.saturating_add(part.cost));
    Cost {
        shape: Shape { size, count },
        cost,
    }
}

/// A call reads all its operands once; `+` builds a value as large as both, a conditional or an
/// index returns one of them, `matches` compiles its pattern and may try it at every position;
/// comparisons, logic, arithmetic, `size` and tests return a scalar; anything else
/// (conversions) at most its operands' size. A comprehension's step `@result + …` appends in
/// place (cel does so for `map` and `filter`; `exists_one` adds integers), so the accumulator is
/// not copied each time.
fn call_cost(function: &str, parts: &[Cost], appends_to_accumulator: bool) -> Cost {
    let operands = parts
        .iter()
        .fold(0u64, |total, part| total.saturating_add(part.shape.size));
    let counts = parts
        .iter()
        .fold(0u64, |total, part| total.saturating_add(part.shape.count));
    let most = parts
        .iter()
        .fold(0u64, |most, part| most.max(part.shape.count));
    // A conditional returns one branch and an index looks one key up: neither copies.
    let picks = matches!(
        function,
        operators::CONDITIONAL | operators::INDEX | operators::OPT_INDEX
    );
    let read = if picks {
        0
    } else if appends_to_accumulator {
        operands.saturating_sub(parts.first().map_or(0, |p| p.shape.size))
    } else {
        operands
    };
    let work = parts.iter().fold(read.saturating_add(1), |total, part| {
        total.saturating_add(part.cost)
    });
    let shape_of = |i: usize| parts.get(i).map_or(Shape::default(), |part| part.shape);
    let shape = match function {
        operators::ADD => Shape {
            size: operands,
            count: counts,
        },
        operators::CONDITIONAL => Shape {
            size: shape_of(1).size.max(shape_of(2).size),
            count: shape_of(1).count.max(shape_of(2).count),
        },
        operators::INDEX | operators::OPT_INDEX => shape_of(0),
        "matches" => {
            // cel compiles the pattern on every call (measured: about half a millisecond for a
            // short pattern in a debug build, some 20,000 units), then scans the text.
            let compile = REGEX_COMPILE_COST.saturating_add(shape_of(1).size.saturating_mul(1_000));
            let scan = shape_of(0).size.saturating_mul(shape_of(1).size);
            return Cost::scalar(work.saturating_add(compile).saturating_add(scan));
        }
        operators::LOGICAL_AND
        | operators::LOGICAL_OR
        | operators::LOGICAL_NOT
        | operators::NOT_STRICTLY_FALSE
        | operators::EQUALS
        | operators::NOT_EQUALS
        | operators::LESS
        | operators::LESS_EQUALS
        | operators::GREATER
        | operators::GREATER_EQUALS
        | operators::IN
        | operators::SUBSTRACT
        | operators::MULTIPLY
        | operators::DIVIDE
        | operators::MODULO
        | operators::NEGATE
        | "size"
        | "contains"
        | "startsWith"
        | "endsWith"
        | "int"
        | "uint"
        | "double"
        | "bool"
        | "type" => return Cost::scalar(work),
        _ => Shape {
            size: operands.max(1),
            count: most,
        },
    };
    Cost { shape, cost: work }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(source: &str) -> Expression {
        cel::parser::Parser::new()
            .parse(source)
            .unwrap_or_else(|e| panic!("{source}: {e:?}"))
    }

    #[test]
    fn ordinary_conditions_pass_the_screen() {
        for source in [
            r#"amount > 10000 && manager_approval.outcome == "approve""#,
            r#"dept in ["sales", "ops"] || (amount >= 1.5e3 && !urgent)"#,
            r#"tags.exists(t, t == "travel") && size(note) < 200"#,
            r#"note.contains("a (b [c") && x != 1"#,
        ] {
            screen_source(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            check_shape(&parsed(source)).unwrap_or_else(|e| panic!("{source}: {e}"));
        }
    }

    #[test]
    fn a_long_chain_of_terms_is_refused_before_parsing() {
        let chain = vec!["1"; 6_000].join(" + ");
        let error = screen_source(&chain).unwrap_err();
        assert!(error.contains("characters"), "{error}");
        let shorter = vec!["1"; 150].join("+");
        let error = screen_source(&shorter).unwrap_err();
        assert!(error.contains("149 operators"), "{error}");
        let members = format!("a{}", ".b".repeat(150));
        assert!(screen_source(&members).unwrap_err().contains("operators"));
        let after_digits = format!("a1{}", ".b1".repeat(150));
        assert!(
            screen_source(&after_digits)
                .unwrap_err()
                .contains("operators")
        );
        screen_source("amount > 1.5 && rate < 0.25").unwrap();
    }

    #[test]
    fn deep_brackets_are_refused_but_brackets_in_strings_do_not_count() {
        let deep = format!("{}true{}", "(".repeat(40), ")".repeat(40));
        assert!(screen_source(&deep).unwrap_err().contains("nest 40 deep"));
        let quoted = format!("s == \"{}\"", "(".repeat(100));
        screen_source(&quoted).unwrap();
        let escaped = r#"s == "\"((((" && t == '+++'"#;
        screen_source(escaped).unwrap();
    }

    #[test]
    fn nested_comprehensions_are_refused() {
        let nested = "a.all(x, a.all(y, a.all(z, x + y + z > 0)))";
        screen_source(nested).unwrap();
        let error = check_shape(&parsed(nested)).unwrap_err();
        assert!(error.contains("inside another"), "{error}");
        check_shape(&parsed("a.all(x, x > 0) && a.exists(y, y == 2)")).unwrap();
    }

    #[test]
    fn json_shapes_count_bytes_and_elements() {
        let shape = |value| json_shape(&value);
        assert_eq!(shape(serde_json::json!(1)), Shape { size: 1, count: 0 });
        assert_eq!(
            shape(serde_json::json!("abcd")),
            Shape { size: 5, count: 0 }
        );
        assert_eq!(
            shape(serde_json::json!([1, 2])),
            Shape { size: 3, count: 2 }
        );
        assert_eq!(
            shape(serde_json::json!({"ab": [1, 2, 3]})),
            Shape { size: 7, count: 3 }
        );
    }

    /// Estimates with every variable of `size` units, as many elements as units (the worst).
    fn estimate_of(source: &str, sizes: &[(&str, u64)]) -> Estimate {
        let shapes: HashMap<&str, Shape> = sizes
            .iter()
            .map(|&(name, size)| (name, Shape { size, count: size }))
            .collect();
        estimate(&parsed(source), &shapes)
    }

    #[test]
    fn ordinary_conditions_cost_little() {
        let e = estimate_of(
            r#"amount > 10000 && manager_approval.outcome == "approve""#,
            &[("amount", 1), ("manager_approval", 60)],
        );
        assert!(e.cost < 1_000, "{e:?}");
        assert!(e.over_budget(MAX_EVALUATION_COST).is_none());
        let e = estimate_of(r#"tags.exists(t, t == "x")"#, &[("tags", 200)]);
        assert!(e.cost < 50_000, "{e:?}");
        // A comprehension over a list of 10,000 small items stays linear.
        let e = estimate_of("items.all(i, i.amount > 0)", &[("items", 10_000)]);
        assert!(e.over_budget(MAX_EVALUATION_COST).is_none(), "{e:?}");
        let e = estimate_of(
            "size(items.filter(i, i.amount > 0)) > 1",
            &[("items", 10_000)],
        );
        assert!(e.over_budget(MAX_EVALUATION_COST).is_none(), "{e:?}");
    }

    #[test]
    fn string_building_over_big_variables_is_over_budget() {
        let doubling = vec!["s"; 60].join(" + ");
        let e = estimate_of(&format!("size({doubling}) > 0"), &[("s", 100_000)]);
        assert!(e.over_budget(MAX_EVALUATION_COST).is_some(), "{e:?}");
        let mapped = estimate_of("size(l.map(x, s)) > 0", &[("l", 10_000), ("s", 10_000)]);
        assert!(
            mapped.over_budget(MAX_EVALUATION_COST).is_some(),
            "{mapped:?}"
        );
        // The same expressions over small variables are fine.
        let e = estimate_of(&format!("size({doubling}) > 0"), &[("s", 10)]);
        assert!(e.over_budget(MAX_EVALUATION_COST).is_none(), "{e:?}");
    }
}
