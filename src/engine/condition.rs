//! Conditions on the sequence flows that leave an exclusive gateway.
//!
//! A condition is a Common Expression Language (CEL) expression over the instance variables,
//! compiled once when a definition is deployed so that a typo is refused at deploy time rather
//! than failing a running instance. The compiled program is immutable and shared: a parsed
//! definition lives in an `Arc` that many tokio tasks read, so [`Condition`] is `Send + Sync`
//! and cheap to clone. Evaluation turns the JSON variables into CEL values on every call; the
//! variables are small and change between calls, so there is nothing worth caching.
//!
//! Every condition is held to the limits of [`super::condition_limits`]: size and shape at
//! compile time, a worst-case cost computed from the variables before each evaluation. Only the
//! variables the expression names are converted, so a large unrelated variable costs nothing.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use cel::common::value::Val;
use cel::objects::Key;
use cel::{Context, Env, ExecutionError, ParseErrors, Program, Value};
use serde_json::{Map, Number, Value as Json};

use super::condition_limits::{self, MAX_EVALUATION_COST};

/// The standard CEL environment (functions, macros), built once: building it registers a few
/// hundred overloads, which is wasted work to repeat for every evaluation.
static STANDARD_ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// What converting one unit of a JSON variable to a CEL value is charged (measured: building the
/// CEL maps and lists of a variable costs several times a plain copy).
const CONVERSION_COST: u64 = 16;

/// A compiled CEL boolean expression over the instance variables.
#[derive(Clone)]
pub struct Condition {
    source: Arc<str>,
    program: Arc<Program>,
    /// The top-level variables the expression reads, in no particular order.
    variables: Arc<[String]>,
}

impl fmt::Debug for Condition {
    // The compiled program is an AST nobody wants in a log line; the source says it all.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&&*self.source).finish()
    }
}

impl Condition {
    /// Compiles `source`; the error is the CEL parser's reason with line and column, or the
    /// limit the expression is over.
    pub fn compile(source: &str) -> Result<Condition, String> {
        if source.trim().is_empty() {
            return Err("the expression is empty".to_owned());
        }
        // The text is screened before cel's parser sees it: the parser recurses.
        condition_limits::screen_source(source)?;
        let program = STANDARD_ENV
            .compile(source)
            .map_err(|errors| describe_parse_errors(&errors, source))?;
        condition_limits::check_shape(program.expression())?;
        let variables = program
            .references()
            .variables()
            .into_iter()
            .map(str::to_owned)
            .collect();
        Ok(Condition {
            source: Arc::from(source),
            program: Arc::new(program),
            variables,
        })
    }

    /// The expression as written in the definition.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The top-level variables the expression reads.
    pub fn variables(&self) -> &[String] {
        &self.variables
    }

    /// Evaluates the condition with every top-level key of `variables` bound as a CEL identifier.
    ///
    /// A reference to a variable that is not there, or a result that is not a bool, is an error
    /// rather than `false`: silently taking another branch would hide a broken model.
    pub fn evaluate(&self, variables: &Map<String, Json>) -> Result<bool, String> {
        let mut budget = MAX_EVALUATION_COST;
        self.evaluate_within(variables, &mut budget)
    }

    /// [`Condition::evaluate`] drawing on a budget shared by several evaluations (the
    /// conditions of one transition): the worst-case cost, computed from the sizes of the
    /// variables read, is taken from `budget` before evaluating, and an evaluation whose worst
    /// case is over what is left (or over [`MAX_EVALUATION_COST`]) is refused without running.
    pub fn evaluate_within(
        &self,
        variables: &Map<String, Json>,
        budget: &mut u64,
    ) -> Result<bool, String> {
        match self.execute_within(variables, &[], budget, |_| {})? {
            Value::Bool(result) => Ok(result),
            other => Err(format!(
                "the condition gave {} instead of a bool",
                describe_value_type(&other)
            )),
        }
    }

    /// Runs the expression under the same budget as [`Condition::evaluate_within`] and returns
    /// its value of any type. `bound` are identifiers set by the engine rather than read from
    /// `variables` (they win over a variable of the same name); `extend` adds functions.
    pub(super) fn execute_within(
        &self,
        variables: &Map<String, Json>,
        bound: &[(&str, &Json)],
        budget: &mut u64,
        extend: impl FnOnce(&mut Context<'_, '_>),
    ) -> Result<Value, String> {
        let read: Vec<(&str, &Json)> = self
            .variables
            .iter()
            .filter(|name| bound.iter().all(|(b, _)| b != &name.as_str()))
            .filter_map(|name| variables.get_key_value(name.as_str()))
            .map(|(name, value)| (name.as_str(), value))
            .collect();
        let shapes: HashMap<&str, condition_limits::Shape> = read
            .iter()
            .map(|(name, value)| (*name, condition_limits::json_shape(value)))
            .collect();
        let mut estimate = condition_limits::estimate(self.program.expression(), &shapes);
        // Converting the variables to CEL values is work too: a few units per JSON node.
        estimate.cost = shapes.values().fold(estimate.cost, |total, shape| {
            total.saturating_add(shape.size.saturating_mul(CONVERSION_COST))
        });
        let allowed = (*budget).min(MAX_EVALUATION_COST);
        if let Some(reason) = estimate.over_budget(allowed) {
            return Err(format!(
                "the condition is refused before evaluation: {reason}"
            ));
        }
        *budget = budget.saturating_sub(estimate.cost);
        let mut context = Context::with_env(Arc::clone(&STANDARD_ENV));
        for (name, value) in read.into_iter().chain(bound.iter().copied()) {
            let value: Box<dyn Val> = json_to_cel(value)
                .try_into()
                .map_err(|error| describe_execution_error(&error))?;
            context.add_variable_as_val(name, value);
        }
        extend(&mut context);
        self.program
            .execute(&context)
            .map_err(|error| describe_execution_error(&error))
    }

    /// The parsed expression, for checks of what it calls.
    pub(super) fn expression(&self) -> &cel::parser::Expression {
        self.program.expression()
    }
}

/// One line per parser complaint, without the caret snippet cel prints on a second line: the
/// reason ends up inside a one-line deployment error.
fn describe_parse_errors(errors: &ParseErrors, source: &str) -> String {
    let mut reasons: Vec<String> = errors
        .errors
        .iter()
        .map(|error| {
            format!(
                "line {}, column {}: {}",
                error.pos.0,
                error.pos.1.saturating_add(1),
                error.msg
            )
        })
        .collect();
    if reasons.is_empty() {
        reasons.push("the expression does not parse".to_owned());
    }
    let mut reason = reasons.join("; ");
    // Camunda users write JUEL; tell them what to write instead of only that it failed.
    if source.trim_start().starts_with("${") {
        reason.push_str(" (conditions are CEL: write `amount > 10000`, not `${amount > 10000}`)");
    }
    reason
}

fn describe_execution_error(error: &ExecutionError) -> String {
    match error {
        ExecutionError::UndeclaredReference(name) => format!("undeclared reference to '{name}'"),
        ExecutionError::NoSuchKey(key) => format!("no such key '{key}'"),
        other => other.to_string(),
    }
}

pub(super) fn describe_value_type(value: &Value) -> &'static str {
    match value {
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        Value::Function(..) => "a function",
        Value::Int(_) => "an int",
        Value::UInt(_) => "a uint",
        Value::Float(_) => "a double",
        Value::String(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "a bool",
        Value::Null => "null",
        _ => "a value of another type",
    }
}

/// JSON to CEL, keeping JSON's own number kinds: a number written without a fraction or
/// exponent is an `int` (so `count + 1` stays integer arithmetic), any other is a `double`.
/// cel compares and tests equality across `int` and `double` (`12000.5 > 10000` and
/// `12000 == 12000.0` both hold), so `amount > 10000` works whichever way the client sent it.
/// An integer beyond `i64` becomes a `double` rather than a CEL `uint`: literals in conditions
/// are `int`, and `uint + int` has no overload.
fn json_to_cel(value: &Json) -> Value {
    match value {
        Json::Null => Value::Null,
        Json::Bool(flag) => Value::Bool(*flag),
        Json::Number(number) => number_to_cel(number),
        Json::String(text) => Value::String(Arc::new(text.clone())),
        Json::Array(items) => Value::List(Arc::new(items.iter().map(json_to_cel).collect())),
        Json::Object(entries) => Value::from(
            entries
                .iter()
                .map(|(key, value)| (Key::from(key.as_str()), json_to_cel(value)))
                .collect::<std::collections::HashMap<Key, Value>>(),
        ),
    }
}

fn number_to_cel(number: &Number) -> Value {
    if let Some(int) = number.as_i64() {
        Value::Int(int)
    } else if let Some(double) = number.as_f64() {
        Value::Float(double)
    } else {
        // Only reachable with serde_json's arbitrary_precision feature, which we do not enable.
        Value::Null
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vars(value: Json) -> Map<String, Json> {
        match value {
            Json::Object(map) => map,
            _ => panic!("test variables must be a JSON object"),
        }
    }

    fn eval(source: &str, variables: Json) -> Result<bool, String> {
        Condition::compile(source)?.evaluate(&vars(variables))
    }

    #[test]
    fn condition_is_send_sync_and_clone() {
        fn assert_shareable<T: Send + Sync + Clone + 'static>() {}
        assert_shareable::<Condition>();
    }

    #[test]
    fn debug_prints_the_source_only() {
        let condition = Condition::compile("amount > 1").unwrap();
        assert_eq!(format!("{condition:?}"), r#"Condition("amount > 1")"#);
        assert_eq!(condition.source(), "amount > 1");
    }

    #[test]
    fn int_variable_against_int_literal() {
        assert_eq!(eval("amount > 10000", json!({"amount": 12000})), Ok(true));
        assert_eq!(eval("amount > 10000", json!({"amount": 9000})), Ok(false));
        assert_eq!(eval("amount > 10000", json!({"amount": 10000})), Ok(false));
    }

    #[test]
    fn double_variable_against_int_literal() {
        assert_eq!(eval("amount > 10000", json!({"amount": 12000.5})), Ok(true));
        assert_eq!(
            eval("amount > 10000", json!({"amount": 10000.0})),
            Ok(false)
        );
        assert_eq!(
            eval("amount >= 10000", json!({"amount": 10000.0})),
            Ok(true)
        );
        assert_eq!(eval("amount < 10000", json!({"amount": 9999.99})), Ok(true));
    }

    #[test]
    fn int_variable_against_double_literal() {
        assert_eq!(eval("amount > 10000.5", json!({"amount": 10001})), Ok(true));
        assert_eq!(eval("amount <= 0.5", json!({"amount": 1})), Ok(false));
    }

    #[test]
    fn equality_across_int_and_double() {
        assert_eq!(
            eval("amount == 12000", json!({"amount": 12000.0})),
            Ok(true)
        );
        assert_eq!(
            eval("amount == 12000.0", json!({"amount": 12000})),
            Ok(true)
        );
        assert_eq!(
            eval("amount != 12000", json!({"amount": 12000.5})),
            Ok(true)
        );
    }

    #[test]
    fn huge_integers_still_compare() {
        assert_eq!(eval("n > 10", json!({"n": u64::MAX})), Ok(true));
        assert_eq!(eval("n < 0", json!({"n": i64::MIN})), Ok(true));
    }

    #[test]
    fn integer_arithmetic_stays_integer() {
        assert_eq!(eval("count + 1 == 3", json!({"count": 2})), Ok(true));
        assert_eq!(eval("price * 2.0 > 3.0", json!({"price": 1.75})), Ok(true));
    }

    #[test]
    fn mixed_arithmetic_needs_an_explicit_conversion() {
        // CEL compares int with double but has no `int * double`: this is the language, and
        // the error says so rather than guessing.
        assert!(eval("amount * 1.1 > 100.0", json!({"amount": 100})).is_err());
        assert_eq!(
            eval("double(amount) * 1.1 > 100.0", json!({"amount": 100})),
            Ok(true)
        );
    }

    #[test]
    fn string_equality() {
        assert_eq!(eval(r#"city == "上海""#, json!({"city": "上海"})), Ok(true));
        assert_eq!(
            eval(r#"city == 'Beijing'"#, json!({"city": "上海"})),
            Ok(false)
        );
    }

    #[test]
    fn nested_map_member_access() {
        let variables = json!({
            "manager_approval": {"outcome": "approve", "comment": "ok", "completed_by": "bob"}
        });
        assert_eq!(
            eval(
                r#"manager_approval.outcome == "approve""#,
                variables.clone()
            ),
            Ok(true)
        );
        assert_eq!(
            eval(r#"manager_approval["outcome"] == "reject""#, variables),
            Ok(false)
        );
    }

    #[test]
    fn the_expense_condition() {
        let source = r#"amount > 10000 && manager_approval.outcome == "approve""#;
        let approved_big = json!({"amount": 12000.5, "manager_approval": {"outcome": "approve"}});
        let approved_small = json!({"amount": 800, "manager_approval": {"outcome": "approve"}});
        let rejected_big = json!({"amount": 12000, "manager_approval": {"outcome": "reject"}});
        assert_eq!(eval(source, approved_big), Ok(true));
        assert_eq!(eval(source, approved_small), Ok(false));
        assert_eq!(eval(source, rejected_big), Ok(false));
    }

    #[test]
    fn logical_operators() {
        let variables = json!({"a": true, "b": false});
        assert_eq!(eval("a && b", variables.clone()), Ok(false));
        assert_eq!(eval("a || b", variables.clone()), Ok(true));
        assert_eq!(eval("!b && (a || b)", variables), Ok(true));
    }

    #[test]
    fn lists_null_and_macros() {
        let variables = json!({"tags": ["urgent", "travel"], "note": null, "m": {"k": 1}});
        assert_eq!(eval(r#""urgent" in tags"#, variables.clone()), Ok(true));
        assert_eq!(eval("size(tags) == 2", variables.clone()), Ok(true));
        assert_eq!(eval("note == null", variables.clone()), Ok(true));
        assert_eq!(eval("has(m.k) && !has(m.x)", variables), Ok(true));
    }

    #[test]
    fn missing_variable_is_an_error() {
        let error = eval("amount > 10000", json!({})).unwrap_err();
        assert_eq!(error, "undeclared reference to 'amount'");
    }

    #[test]
    fn missing_key_is_an_error() {
        let error = eval(r#"task.outcome == "approve""#, json!({"task": {}})).unwrap_err();
        assert!(error.contains("outcome"), "{error}");
    }

    #[test]
    fn non_bool_result_is_an_error() {
        let error = eval("amount + 1", json!({"amount": 1})).unwrap_err();
        assert!(error.contains("an int instead of a bool"), "{error}");
        let error = eval("name", json!({"name": "x"})).unwrap_err();
        assert!(error.contains("a string instead of a bool"), "{error}");
    }

    #[test]
    fn type_mismatch_is_an_error() {
        let error = eval("amount > 10000", json!({"amount": "12000"})).unwrap_err();
        assert!(!error.is_empty());
    }

    #[test]
    fn syntax_errors_are_refused_at_compile_time() {
        let error = Condition::compile("amount >").unwrap_err();
        assert!(error.starts_with("line 1, column "), "{error}");
        assert!(!error.contains('\n'), "{error}");
        assert!(Condition::compile("(a && b").is_err());
        assert!(Condition::compile("a ==== b").is_err());
    }

    #[test]
    fn juel_gets_a_hint() {
        let error = Condition::compile("${amount > 1000}").unwrap_err();
        assert!(error.contains("conditions are CEL"), "{error}");
    }

    #[test]
    fn empty_expression_is_refused() {
        assert_eq!(
            Condition::compile("  \n ").unwrap_err(),
            "the expression is empty"
        );
    }

    #[test]
    fn hostile_expressions_do_not_panic() {
        let deep = format!("{}true{}", "(".repeat(5000), ")".repeat(5000));
        assert!(Condition::compile(&deep).is_err());
        let long_chain = vec!["a"; 2000].join(" && ");
        let _ = Condition::compile(&long_chain);
        for garbage in [
            "\u{0}",
            "\"unterminated",
            "1 +",
            "}{",
            "a.",
            "[1,2",
            "🙂 == 1",
        ] {
            assert!(Condition::compile(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn division_by_zero_is_an_error_not_a_panic() {
        assert!(eval("1 / n == 0", json!({"n": 0})).is_err());
    }

    #[test]
    fn limits_refuse_hostile_expressions_at_compile_time() {
        let chain = vec!["1"; 6_000].join(" + ");
        assert!(Condition::compile(&format!("{chain} == 6000")).is_err());
        let error = Condition::compile("a.all(x, a.all(y, a.all(z, x + y + z > 0)))").unwrap_err();
        assert!(error.contains("inside another"), "{error}");
    }

    #[test]
    fn string_building_over_a_large_variable_is_refused_before_it_runs() {
        let doubling = vec!["s"; 60].join(" + ");
        let condition = Condition::compile(&format!("size({doubling}) > 0")).unwrap();
        let big = json!({"s": "x".repeat(100_000)});
        let error = condition.evaluate(&vars(big)).unwrap_err();
        assert!(error.contains("refused before evaluation"), "{error}");
        assert_eq!(condition.evaluate(&vars(json!({"s": "xy"}))), Ok(true));
    }

    #[test]
    fn a_shared_budget_runs_out() {
        let condition = Condition::compile("size(s) > 0").unwrap();
        let variables = vars(json!({"s": "x".repeat(1_000)}));
        let mut budget = 20_000;
        let mut runs = 0;
        while condition.evaluate_within(&variables, &mut budget).is_ok() {
            runs += 1;
            assert!(runs < 10, "the budget must run out");
        }
        assert!(runs >= 1);
    }

    #[test]
    fn only_the_variables_read_are_converted() {
        // An unrelated huge variable neither costs budget nor time.
        let condition = Condition::compile("amount > 1").unwrap();
        let variables = vars(json!({"amount": 2, "attachment": "x".repeat(4_000_000)}));
        let mut budget = 100;
        assert_eq!(condition.evaluate_within(&variables, &mut budget), Ok(true));
    }

    /// The largest expressions the limits accept compile and evaluate on a 2 MiB stack, the
    /// size of a tokio worker thread's, in a debug build whose frames are the largest.
    #[test]
    fn the_largest_accepted_expressions_fit_a_worker_stack() {
        let run = || {
            let chain = vec!["1"; 100].join(" + ");
            let nested = format!("{}x{} > 0", "(".repeat(32), " + 1)".repeat(32));
            let members = format!("m{} == 1", ".a".repeat(99));
            let mut object = json!(1);
            for _ in 0..99 {
                object = json!({ "a": object });
            }
            let cases = [
                (format!("{chain} == 100"), json!({})),
                (nested, json!({"x": 1})),
                (members, json!({ "m": object })),
            ];
            for (source, variables) in cases {
                let condition = Condition::compile(&source).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(condition.evaluate(&vars(variables)), Ok(true), "{source}");
            }
        };
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(run)
            .expect("thread")
            .join()
            .expect("no stack overflow");
    }

    /// Not a test: prints what conditions near the budget cost and take, to calibrate the
    /// units. `cargo test --lib measure_conditions_near_the_budget -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn measure_conditions_near_the_budget() {
        let objects: Vec<Json> = (0..6_500)
            .map(|i| json!({ "a": format!("v{i}") }))
            .collect();
        let cases: Vec<(String, Json)> = vec![
            ("l.all(x, x.a == 'abc')".into(), json!({ "l": objects })),
            (
                "size(l.filter(x, x > 3)) > 0".into(),
                json!({ "l": (0..12_000).collect::<Vec<_>>() }),
            ),
            (
                format!("size({}) > 0", vec!["s"; 50].join(" + ")),
                json!({ "s": "x".repeat(750) }),
            ),
            (
                "l.exists(x, x.matches(p))".into(),
                json!({ "l": vec!["abcdefgh"; 32], "p": "a.*z" }),
            ),
        ];
        for (source, variables) in cases {
            let variables = vars(variables);
            let condition = Condition::compile(&source).expect("compiles");
            let mut budget = MAX_EVALUATION_COST;
            let started = std::time::Instant::now();
            let result = condition.evaluate_within(&variables, &mut budget);
            println!(
                "{source:.40}: charged {} units, {result:?}, {:?}",
                MAX_EVALUATION_COST - budget,
                started.elapsed()
            );
        }
    }
}
