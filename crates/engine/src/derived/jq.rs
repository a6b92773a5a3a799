//! Calculation programs: jq (the jaq crates) over an entity, checked when a blueprint is written and made
//! safe to run on any read.
//!
//! A program is parsed, checked and *rewritten* before it is compiled:
//! - refused: local definitions (`def`, the only way to recurse), unbounded or combinatorial generators
//!   (`range`, `repeat`, `while`, `until`, `recurse(f)`, `combinations`), everything not a function of the
//!   entity (`now`, `localtime`, `env`, `$ENV`, `input`, `debug`, `halt`, ...), and assignments (`=`, `|=`,
//!   `+=`, `setpath`, `pick`: an index taken from the data could grow an array without bound);
//! - rewritten: every `*` runs through a guard that refuses a string repeated past [`MAX_STRING_BYTES`]
//!   (jq repeats `"x" * n`, and `n` may come from an entity any writer controls);
//! - bounded: the program's length ([`MAX_PROGRAM_LEN`]) and its output ([`MAX_OUTPUT_BYTES`]); only the
//!   first output is taken, so a program that yields many values stops after one.
//!
//! What remains is a program without loops or recursion over an input of bounded size (an entity). Its cost is
//! polynomial in that size; a program written to blow up through repeated doubling (`. + . | . + . | ...`)
//! is the author's, an Admin or blueprint moderator, and is bounded by the program length.

use std::fmt::Write as _;
use std::rc::Rc;

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Pattern, Term};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::path::{Opt, Part};
use jaq_core::{Ctx, Vars, data};
use jaq_json::Val;
use serde_json::Value;

/// The longest calculation program, in bytes.
pub const MAX_PROGRAM_LEN: usize = 4096;
/// The largest value a calculation may produce, serialised.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// The longest string a `*` may build.
pub const MAX_STRING_BYTES: usize = 1 << 20;

/// Named filters a calculation may not call (any arity unless listed in [`DENIED_WITH_ARGS`]).
const DENIED: &[&str] = &[
    "range",
    "repeat",
    "while",
    "until",
    "combinations",
    "input",
    "inputs",
    "env",
    "now",
    "localtime",
    "strflocaltime",
    "debug",
    "stderr",
    "halt",
    "halt_error",
    "input_filename",
    "input_line_number",
    "builtins",
    "setpath",
    "pick",
    "get_search_list",
    "get_prog_origin",
    "get_jq_origin",
];
/// Named filters refused only with arguments (`recurse` alone walks the input, which is bounded).
const DENIED_WITH_ARGS: &[&str] = &["recurse"];
const DENIED_VARS: &[&str] = &["$ENV", "$__prog_args"];

/// The guards the rewritten program calls (compiled as definitions ahead of it; they use the plain operator).
/// Operands are bound one after the other, so where one side fails and the other yields nothing, the guarded
/// `*` may fail where jaq's yields nothing (or the reverse): a calculation is null either way.
const PRELUDE: &str = r#"
def __berth_rep($s; $n): if ($s | utf8bytelength) * $n > 1048576
  then error("calculation: a string repeated past 1 MiB") else $s * $n end;
def __berth_mul(f; g): g as $b | f as $a |
  if ($a | type) == "string" and ($b | type) == "number" then __berth_rep($a; $b)
  elif ($b | type) == "string" and ($a | type) == "number" then __berth_rep($b; $a)
  else $a * $b end;
def IN(s): any(s == .; .);
def IN(src; s): any(src == s; .);
"#;

type Data = data::JustLut<Val>;

/// A checked, compiled calculation.
pub struct Program {
    filter: jaq_core::Filter<Data>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Program")
    }
}

/// Checks and compiles `code`; the error says what is wrong, in words a blueprint author can act on.
pub fn compile(code: &str) -> Result<Program, String> {
    if code.len() > MAX_PROGRAM_LEN {
        return Err(format!("the expression is {} bytes long; the limit is {MAX_PROGRAM_LEN}", code.len()));
    }
    if code.trim().is_empty() {
        return Err("the expression is empty".into());
    }
    let term = jaq_core::load::parse(code, |p| p.term())
        .ok_or_else(|| "the expression is not valid jq (a syntax error, or an `import` / `include`)".to_string())?;
    check(&term)?;
    let mut rewritten = String::with_capacity(code.len() * 2);
    print(&term, &mut rewritten);
    compile_checked(&rewritten)
}

fn compile_checked(code: &str) -> Result<Program, String> {
    let prelude = jaq_core::load::parse(PRELUDE, |p| p.defs()).ok_or("the calculation prelude does not parse")?;
    let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs()).chain(prelude);
    let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let modules = loader
        .load(&arena, File { code, path: () })
        .map_err(|errors| format!("the expression does not parse ({} error(s))", errors.len()))?;
    let filter = jaq_core::Compiler::default().with_funs(funs).compile(modules).map_err(|errors| {
        let names: Vec<String> =
            errors.iter().flat_map(|(_, errs)| errs.iter().map(|(name, _)| format!("`{name}`"))).take(5).collect();
        format!("the expression calls what does not exist: {}", names.join(", "))
    })?;
    Ok(Program { filter })
}

/// Refuses what a calculation may not do (see the module documentation).
fn check(t: &Term<&str>) -> Result<(), String> {
    let mut err = None;
    visit(t, &mut |t| {
        if err.is_some() {
            return;
        }
        err = match t {
            Term::Def(..) => Some("local definitions (`def`) are not allowed in a calculation".to_string()),
            Term::Call(name, args) => {
                let denied = DENIED.contains(name) || (!args.is_empty() && DENIED_WITH_ARGS.contains(name));
                denied.then(|| format!("`{name}` is not allowed in a calculation"))
            }
            Term::Var(v) if DENIED_VARS.contains(v) => Some(format!("`{v}` is not allowed in a calculation")),
            Term::BinOp(_, BinaryOp::Assign | BinaryOp::Update | BinaryOp::UpdateMath(_) | BinaryOp::UpdateAlt, _) => {
                Some("assignments (`=`, `|=`, `+=`, ...) are not allowed in a calculation".to_string())
            }
            _ => None,
        };
    });
    err.map_or(Ok(()), Err)
}

/// Calls `f` on `t` and every term inside it.
fn visit<'a>(t: &'a Term<&'a str>, f: &mut impl FnMut(&'a Term<&'a str>)) {
    f(t);
    let mut each = |ts: &mut dyn Iterator<Item = &'a Term<&'a str>>| ts.for_each(|t| visit(t, f));
    match t {
        Term::Id | Term::Recurse | Term::Num(_) | Term::Var(_) | Term::Break(_) => {}
        Term::Str(_, parts) => each(&mut parts.iter().filter_map(|p| match p {
            StrPart::Term(t) => Some(t),
            _ => None,
        })),
        Term::Arr(inner) => each(&mut inner.iter().map(|b| &**b)),
        Term::Obj(entries) => each(&mut entries.iter().flat_map(|(k, v)| std::iter::once(k).chain(v))),
        Term::Neg(t) | Term::Label(_, t) => each(&mut std::iter::once(&**t)),
        Term::BinOp(l, op, r) => {
            let mut terms: Vec<&Term<&str>> = vec![l, r];
            if let BinaryOp::Pipe(Some(p)) = op {
                pattern_terms(p, &mut terms);
            }
            each(&mut terms.into_iter())
        }
        Term::Fold(_, xs, p, args) => {
            let mut terms: Vec<&Term<&str>> = vec![xs];
            pattern_terms(p, &mut terms);
            terms.extend(args);
            each(&mut terms.into_iter())
        }
        Term::TryCatch(t, c) => each(&mut std::iter::once(&**t).chain(c.as_deref())),
        Term::IfThenElse(branches, otherwise) => {
            each(&mut branches.iter().flat_map(|(c, t)| [c, t]).chain(otherwise.as_deref()))
        }
        Term::Def(defs, body) => each(&mut defs.iter().map(|d| &d.body).chain(std::iter::once(&**body))),
        Term::Call(_, args) => each(&mut args.iter()),
        Term::Path(t, path) => {
            let mut terms: Vec<&Term<&str>> = vec![t];
            for (part, _) in &path.0 {
                match part {
                    Part::Index(i) => terms.push(i),
                    Part::Range(a, b) => terms.extend(a.iter().chain(b)),
                }
            }
            each(&mut terms.into_iter())
        }
    }
}

fn pattern_terms<'a>(p: &'a Pattern<&'a str>, out: &mut Vec<&'a Term<&'a str>>) {
    match p {
        Pattern::Var(_) => {}
        Pattern::Arr(ps) => ps.iter().for_each(|p| pattern_terms(p, out)),
        Pattern::Obj(entries) => entries.iter().for_each(|(k, p)| {
            out.push(k);
            pattern_terms(p, out)
        }),
    }
}

/// Writes `t` back as jq, every sub-term parenthesised, with `*` through the guard (a checked term has no
/// `def` and no assignment).
fn print(t: &Term<&str>, out: &mut String) {
    let paren = |t: &Term<&str>, out: &mut String| {
        out.push('(');
        print(t, out);
        out.push(')');
    };
    match t {
        Term::Id => out.push('.'),
        Term::Recurse => out.push_str(".."),
        Term::Num(n) | Term::Var(n) => out.push_str(n),
        Term::Break(v) => {
            out.push_str("break ");
            out.push_str(v);
        }
        Term::Str(fmt, parts) => {
            if let Some(fmt) = fmt {
                out.push_str(fmt);
                out.push(' ');
            }
            out.push('"');
            for part in parts {
                match part {
                    StrPart::Str(s) => out.push_str(s),
                    StrPart::Char(c) => {
                        let quoted = serde_json::to_string(&c.to_string()).unwrap_or_default();
                        out.push_str(quoted.trim_matches('"'));
                    }
                    StrPart::Term(t) => {
                        out.push_str("\\(");
                        print(t, out);
                        out.push(')');
                    }
                }
            }
            out.push('"');
        }
        Term::Arr(None) => out.push_str("[]"),
        Term::Arr(Some(t)) => {
            out.push('[');
            print(t, out);
            out.push(']');
        }
        Term::Obj(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                match (k, v) {
                    (Term::Var(_) | Term::Str(..), None) => print(k, out),
                    (k, None) => paren(k, out),
                    (Term::Str(..), Some(v)) => {
                        print(k, out);
                        out.push_str(": ");
                        paren(v, out);
                    }
                    (k, Some(v)) => {
                        paren(k, out);
                        out.push_str(": ");
                        paren(v, out);
                    }
                }
            }
            out.push('}');
        }
        Term::Neg(t) => {
            out.push('-');
            paren(t, out);
        }
        Term::BinOp(l, BinaryOp::Math(jaq_core::ops::Math::Mul), r) => {
            out.push_str("__berth_mul(");
            print(l, out);
            out.push_str("; ");
            print(r, out);
            out.push(')');
        }
        Term::BinOp(l, op, r) => {
            paren(l, out);
            match op {
                BinaryOp::Pipe(None) => out.push_str(" | "),
                BinaryOp::Pipe(Some(p)) => {
                    out.push_str(" as ");
                    print_pattern(p, out);
                    out.push_str(" | ");
                }
                BinaryOp::Comma => out.push_str(", "),
                BinaryOp::Alt => out.push_str(" // "),
                BinaryOp::Or => out.push_str(" or "),
                BinaryOp::And => out.push_str(" and "),
                BinaryOp::Math(m) => {
                    let _ = write!(out, " {} ", m.as_str());
                }
                BinaryOp::Cmp(c) => {
                    let _ = write!(out, " {} ", c.as_str());
                }
                // Refused by `check`; written as jq would, for completeness.
                BinaryOp::Assign => out.push_str(" = "),
                BinaryOp::Update => out.push_str(" |= "),
                BinaryOp::UpdateMath(m) => {
                    let _ = write!(out, " {}= ", m.as_str());
                }
                BinaryOp::UpdateAlt => out.push_str(" //= "),
            }
            paren(r, out);
        }
        Term::Label(v, t) => {
            let _ = write!(out, "label {v} | ");
            paren(t, out);
        }
        Term::Fold(kind, xs, p, args) => {
            out.push_str(kind);
            out.push(' ');
            paren(xs, out);
            out.push_str(" as ");
            print_pattern(p, out);
            out.push_str(" (");
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    out.push_str("; ");
                }
                print(a, out);
            }
            out.push(')');
        }
        Term::TryCatch(t, c) => {
            out.push_str("try ");
            paren(t, out);
            if let Some(c) = c {
                out.push_str(" catch ");
                paren(c, out);
            }
        }
        Term::IfThenElse(branches, otherwise) => {
            for (i, (c, t)) in branches.iter().enumerate() {
                out.push_str(if i == 0 { "if " } else { " elif " });
                paren(c, out);
                out.push_str(" then ");
                paren(t, out);
            }
            if let Some(e) = otherwise {
                out.push_str(" else ");
                paren(e, out);
            }
            out.push_str(" end");
        }
        // Refused by `check`.
        Term::Def(..) => out.push_str("error(\"def\")"),
        Term::Call(name, args) => {
            out.push_str(name);
            if !args.is_empty() {
                out.push('(');
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        out.push_str("; ");
                    }
                    print(a, out);
                }
                out.push(')');
            }
        }
        Term::Path(t, path) => {
            if matches!(**t, Term::Id) {
                out.push('.');
            } else {
                paren(t, out);
            }
            for (part, opt) in &path.0 {
                out.push('[');
                match part {
                    Part::Index(i) => print(i, out),
                    Part::Range(a, b) => {
                        if let Some(a) = a {
                            print(a, out);
                        }
                        if a.is_some() || b.is_some() {
                            out.push(':');
                        }
                        if let Some(b) = b {
                            print(b, out);
                        }
                    }
                }
                out.push(']');
                if matches!(opt, Opt::Optional) {
                    out.push('?');
                }
            }
        }
    }
}

fn print_pattern(p: &Pattern<&str>, out: &mut String) {
    match p {
        Pattern::Var(v) => out.push_str(v),
        Pattern::Arr(ps) => {
            out.push('[');
            for (i, p) in ps.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                print_pattern(p, out);
            }
            out.push(']');
        }
        Pattern::Obj(entries) => {
            out.push('{');
            for (i, (k, p)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push('(');
                print(k, out);
                out.push_str("): ");
                print_pattern(p, out);
            }
            out.push('}');
        }
    }
}

impl Program {
    /// Runs the program on `input`: its first output, or an error in words (the program failed, produced
    /// nothing, or produced more than [`MAX_OUTPUT_BYTES`]).
    pub fn run(&self, input: &Value) -> Result<Value, String> {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = self.filter.id.run((ctx, to_val(input)));
        let first = match outputs.next() {
            None => return Ok(Value::Null),
            Some(out) => jaq_core::unwrap_valr(out).map_err(|e| format!("the calculation failed: {e}"))?,
        };
        let text = first.to_string();
        if text.len() > MAX_OUTPUT_BYTES {
            return Err(format!("the calculation produced {} bytes; the limit is {MAX_OUTPUT_BYTES}", text.len()));
        }
        serde_json::from_str(&text).map_err(|_| "the calculation produced a value that is not JSON".to_string())
    }
}

fn to_val(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::from(*b),
        Value::Number(n) => match n.as_i64().and_then(|i| isize::try_from(i).ok()) {
            Some(i) => Val::from(i),
            None => Val::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Val::from(s.clone()),
        Value::Array(items) => Val::Arr(Rc::new(items.iter().map(to_val).collect())),
        Value::Object(map) => Val::obj(map.iter().map(|(k, v)| (Val::from(k.clone()), to_val(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(code: &str, input: Value) -> Result<Value, String> {
        compile(code)?.run(&input)
    }

    #[test]
    fn ordinary_calculations_work() {
        let e = json!({"identifier": "pay", "title": "Pay", "properties": {"replicas": 3, "cpu": 0.5, "lang": "Rust",
            "tags": ["a", "b"]}, "relations": {"team": "core"}});
        assert_eq!(run(".properties.replicas * .properties.cpu", e.clone()), Ok(json!(1.5)));
        assert_eq!(run("\"https://x/\" + .identifier", e.clone()), Ok(json!("https://x/pay")));
        assert_eq!(run(".properties.tags | length", e.clone()), Ok(json!(2)));
        assert_eq!(run("\"\\(.title) (\\(.relations.team))\"", e.clone()), Ok(json!("Pay (core)")));
        assert_eq!(run(".properties.lang | ascii_downcase", e.clone()), Ok(json!("rust")));
        assert_eq!(run("if .properties.replicas > 2 then \"ha\" else \"single\" end", e.clone()), Ok(json!("ha")));
        assert_eq!(run("[.properties.tags[] | {name: ., n: 1}] | map(.n) | add", e.clone()), Ok(json!(2)));
        assert_eq!(run("reduce .properties.tags[] as $t (\"\"; . + $t)", e.clone()), Ok(json!("ab")));
        assert_eq!(run(".properties.missing // \"none\"", e.clone()), Ok(json!("none")));
        assert_eq!(run("\"ab\" * 2", e.clone()), Ok(json!("abab")));
        assert_eq!(run(".properties | to_entries | map(.key) | sort | first", e.clone()), Ok(json!("cpu")));
        assert_eq!(run("{(.identifier): .title, \"k\": 1} | keys", e.clone()), Ok(json!(["k", "pay"])));
        assert_eq!(run(".properties.tags as [$a, $b] | $b + $a", e.clone()), Ok(json!("ba")));
        assert_eq!(run("try error(\"x\") catch \"caught\"", e.clone()), Ok(json!("caught")));
        assert_eq!(run(".properties.tags[1:] | .[0]?", e.clone()), Ok(json!("b")));
        assert_eq!(run("-(.properties.replicas) | abs", e.clone()), Ok(json!(3)));
        assert_eq!(run("\"2024-01-02T00:00:00Z\" | fromdate", e.clone()), Ok(json!(1704153600)));
        // jq's `IN`, which jaq does not define (the prelude does).
        assert_eq!(run(".properties.lang | IN(\"Go\", \"Rust\")", e.clone()), Ok(json!(true)));
        assert_eq!(run(".properties.lang | IN(\"Go\")", e.clone()), Ok(json!(false)));
        assert_eq!(run("IN(.properties.tags[]; \"b\", \"z\")", e.clone()), Ok(json!(true)));
        assert_eq!(
            run("\"Payments API\" | ascii_downcase | gsub(\"[^a-z]+\"; \"-\")", e.clone()),
            Ok(json!("payments-api"))
        );
        assert_eq!(run("empty", e), Ok(Value::Null));
    }

    #[test]
    fn hostile_programs_are_refused_when_written() {
        for code in [
            "def f: f; f",
            "[range(1e18)] | length",
            "last(repeat(1))",
            "now",
            "env.HOME",
            "$ENV",
            "input",
            ".a = 1",
            ".[1e9] |= 1",
            "setpath([1e9]; 1)",
            "pick(.[1e9])",
            "[.[]] | combinations",
            "recurse(. + 1)",
            "until(false; .)",
            "import \"x\" as x; 1",
            "(",
            "",
            "nosuchfunction",
        ] {
            assert!(compile(code).is_err(), "{code} should be refused");
        }
        assert!(compile(&" ".repeat(MAX_PROGRAM_LEN + 1)).is_err());
    }

    #[test]
    fn hostile_data_meets_bounds_not_a_crash() {
        let e = json!({"properties": {"s": "xyz", "n": 1e15, "big": "y".repeat(70_000)}});
        let err = run(".properties.s * .properties.n", e.clone()).expect_err("bounded");
        assert!(err.contains("repeated past"), "{err}");
        let err = run(".properties.n * .properties.s", e.clone()).expect_err("bounded");
        assert!(err.contains("repeated past"), "{err}");
        let err = run(".properties.big", e.clone()).expect_err("bounded output");
        assert!(err.contains("limit"), "{err}");
        assert_eq!(run("[limit(3; .properties.s | explode[])] | length", e), Ok(json!(3)));
    }

    proptest::proptest! {
        /// The rewritten program means what the author wrote: for programs without `*` the rewrite only
        /// parenthesises, and gives the same answer as the program compiled as written.
        #[test]
        fn rewriting_keeps_the_meaning(code in program()) {
            let e = json!({"identifier": "a", "title": "T", "properties": {"n": 2, "s": "x", "l": [1, 2, 3], "o": {"k": 1}}});
            // Every generated program is valid jq the checks accept: both must compile, and give the same
            // calculated value (the first output; null when there is none or it failed: see `PRELUDE` for
            // why a failure and an empty output may trade places).
            let value = |r: Result<Value, String>| r.unwrap_or(Value::Null);
            let plain = compile_checked(&code).map(|p| value(p.run(&e)));
            let rewritten = compile(&code).map(|p| value(p.run(&e)));
            proptest::prop_assert!(plain.is_ok(), "{} does not compile as written", code);
            proptest::prop_assert_eq!(plain, rewritten, "{}", code);
        }
    }

    fn program() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(".".to_string()),
            Just(".properties.n".to_string()),
            Just(".properties.s".to_string()),
            Just(".properties.l".to_string()),
            Just(".properties.o".to_string()),
            Just(".title".to_string()),
            Just("1".to_string()),
            Just("\"a\\n\\u00e9\"".to_string()),
            Just("null".to_string()),
        ];
        leaf.prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} + {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} * {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} | {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}, {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} // {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} == {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{{\"k\": {a}, ({b} | tostring): 1}}")),
                inner.clone().prop_map(|a| format!("[{a}]")),
                inner.clone().prop_map(|a| format!("({a})[0]?")),
                inner.clone().prop_map(|a| format!("({a}).k?")),
                inner.clone().prop_map(|a| format!("-{a}")),
                inner.clone().prop_map(|a| format!("\"<\\({a})>\"")),
                inner.clone().prop_map(|a| format!("try {a} catch .")),
                inner.clone().prop_map(|a| format!("{a} as $x | [$x, .]")),
                inner.clone().prop_map(|a| format!("{a} as [$x] | $x")),
                inner.clone().prop_map(|a| format!("{a} as {{k: $v}} | $v")),
                inner.clone().prop_map(|a| format!("reduce .properties.l[] as $x (0; . + $x) | {a}")),
                inner.clone().prop_map(|a| format!("if {a} then 1 elif . then 2 else 3 end")),
                inner.clone().prop_map(|a| format!("label $out | {a} | ., break $out")),
                inner.clone().prop_map(|a| format!("[.[]?] | .[1:] | {a}")),
                inner.clone().prop_map(|a| format!("@base64 \"x\\({a})\"")),
                inner.prop_map(|a| format!("[limit(2; {a})] | length")),
            ]
            .prop_map(|composite| format!("({composite})"))
        })
    }
}
