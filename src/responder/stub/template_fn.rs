//! The functions stub templates may call besides Go's builtins (`len`,
//! `printf`, `eq`, ...): the helpers GripMock's documentation lists for its
//! dynamic templates, with the signatures it documents (`split S SEP`,
//! `format T LAYOUT`, ...), plus `unixMilli` and `randInt`. Its examples also
//! pipe into them (`.Request.id | split "_" | index 1`), which passes the
//! piped value last: `split`, `join`, `format` and `index` take their
//! arguments in either order, telling them apart by type.
//!
//! Times are RFC 3339 strings in UTC with nanoseconds (`now`, `.RequestTime`);
//! `unix` and `format` read them back. `format` takes a Go layout
//! (`2006-01-02T15:04:05Z07:00`). Math helpers work on numbers and numeric
//! strings, take their numbers spread or as one list, and print whole results
//! without a fraction (`7`, not `7.0`), as Go prints a float64.

use std::hash::{BuildHasher, Hasher};

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use gtmpl::{FuncError, Value};

/// Every helper, by name.
pub(crate) const FUNCS: &[(&str, gtmpl::Func)] = &[
    ("uuid", uuid),
    ("now", now),
    ("unix", unix),
    ("unixMilli", unix_milli),
    ("format", format),
    ("randInt", rand_int),
    ("upper", upper),
    ("lower", lower),
    ("title", title),
    ("split", split),
    ("join", join),
    ("index", index),
    ("sprintf", gtmpl::funcs::printf),
    ("str", str),
    ("json", json),
    ("int", int),
    ("int64", int),
    ("float", float),
    ("decimal", decimal),
    ("round", round),
    ("floor", floor),
    ("ceil", ceil),
    ("add", add),
    ("sub", sub),
    ("mul", mul),
    ("div", div),
    ("mod", modulo),
    ("sum", add),
    ("avg", avg),
    ("min", min),
    ("max", max),
    ("gte", gte),
    ("lte", lte),
    ("extract", extract),
    ("bytes", bytes),
    ("string2base64", string2base64),
    ("bytes2base64", bytes2base64),
    ("uuid2base64", uuid2base64),
    ("uuid2bytes", uuid2bytes),
    ("uuid2int64", uuid2int64),
];

/// The current time as templates see it.
pub(crate) fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn arg<'a>(args: &'a [Value], i: usize, name: &str) -> Result<&'a Value, FuncError> {
    args.get(i).ok_or_else(|| FuncError::AtLeastXArgs(name.into(), i + 1))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::NoValue | Value::Nil => String::new(),
        other => other.to_string(),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().or(n.as_i64().map(|i| i as f64)).or(n.as_u64().map(|u| u as f64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// A number result: whole values print without a fraction.
fn num(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 { Value::from(f as i64) } else { Value::from(f) }
}

/// The numbers of a helper's arguments: spread, or one list.
fn numbers(args: &[Value], name: &str) -> Result<Vec<f64>, FuncError> {
    let items = match args {
        [Value::Array(items)] => items.as_slice(),
        _ => args,
    };
    items
        .iter()
        .map(|v| number(v).ok_or_else(|| FuncError::Generic(format!("{name}: `{v}` is not a number"))))
        .collect()
}

fn time(v: &Value, name: &str) -> Result<DateTime<Utc>, FuncError> {
    let s = text(v);
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| FuncError::Generic(format!("{name}: `{s}` is not a time (RFC 3339, as `now` gives)")))
}

fn random() -> u64 {
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

fn uuid(_: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(uuid::Uuid::new_v4().to_string()))
}

fn now(_: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(now_text()))
}

/// `unix` is the time now in seconds; `unix T`, T's.
fn unix(args: &[Value]) -> Result<Value, FuncError> {
    let t = match args.first() {
        Some(v) => time(v, "unix")?,
        None => Utc::now(),
    };
    Ok(Value::from(t.timestamp()))
}

fn unix_milli(args: &[Value]) -> Result<Value, FuncError> {
    let t = match args.first() {
        Some(v) => time(v, "unixMilli")?,
        None => Utc::now(),
    };
    Ok(Value::from(t.timestamp_millis()))
}

/// `format T LAYOUT`, LAYOUT in Go's reference-time notation; `T | format
/// LAYOUT` too (the time is the argument that reads as one).
fn format(args: &[Value]) -> Result<Value, FuncError> {
    let (a, b) = (arg(args, 0, "format")?, arg(args, 1, "format")?);
    let (t, layout) = match time(a, "format") {
        Ok(t) => (t, b),
        Err(e) => (time(b, "format").map_err(|_| e)?, a),
    };
    let layout = go_layout(&text(layout));
    let mut out = String::new();
    use std::fmt::Write as _;
    write!(out, "{}", t.format(&layout))
        .map_err(|_| FuncError::Generic("format: the layout cannot be rendered".into()))?;
    Ok(Value::String(out))
}

/// Go's layout tokens (longest first) as chrono's strftime notation. Times are UTC.
fn go_layout(layout: &str) -> String {
    const TOKENS: &[(&str, &str)] = &[
        ("January", "%B"),
        ("Monday", "%A"),
        ("Z07:00", "Z"),
        ("-07:00", "%:z"),
        ("Z0700", "Z"),
        ("-0700", "%z"),
        (".000000000", "%.9f"),
        (".999999999", "%.f"),
        (".000000", "%.6f"),
        (".000", "%.3f"),
        ("2006", "%Y"),
        ("Jan", "%b"),
        ("Mon", "%a"),
        ("MST", "UTC"),
        ("_2", "%e"),
        ("01", "%m"),
        ("02", "%d"),
        ("03", "%I"),
        ("04", "%M"),
        ("05", "%S"),
        ("06", "%y"),
        ("15", "%H"),
        ("PM", "%p"),
        ("pm", "%P"),
        ("1", "%-m"),
        ("2", "%-d"),
        ("3", "%-I"),
        ("4", "%-M"),
        ("5", "%-S"),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while let Some(c) = rest.chars().next() {
        for (go, strf) in TOKENS {
            if let Some(after) = rest.strip_prefix(go) {
                out.push_str(strf);
                rest = after;
                continue 'outer;
            }
        }
        if c == '%' {
            out.push_str("%%");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn rand_int(args: &[Value]) -> Result<Value, FuncError> {
    let int = |v: &Value| number(v).map(|f| f as i64);
    let (Some(lo), Some(hi)) = (args.first().and_then(int), args.get(1).and_then(int)) else {
        return Err(FuncError::ExactlyXArgs("randInt".into(), 2));
    };
    if hi < lo {
        return Err(FuncError::Generic("randInt: MAX is below MIN".into()));
    }
    let span = hi.abs_diff(lo);
    Ok(Value::from(lo.wrapping_add((random() % span.saturating_add(1).max(1)) as i64)))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(arg(args, 0, "upper")?).to_uppercase()))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(arg(args, 0, "lower")?).to_lowercase()))
}

/// As GripMock's (Go's `strings.ToTitle`): every letter in title case, which
/// for most scripts is upper case.
fn title(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(arg(args, 0, "title")?).to_uppercase()))
}

/// `split S SEP`: a list of strings. `S | split SEP` works too: when only
/// the first argument occurs in the second, it is the separator.
fn split(args: &[Value]) -> Result<Value, FuncError> {
    let mut s = text(arg(args, 0, "split")?);
    let mut sep = text(arg(args, 1, "split")?);
    if !s.contains(&sep) && sep.contains(&s) {
        std::mem::swap(&mut s, &mut sep);
    }
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| Value::String(c.to_string())).collect()
    } else {
        s.split(sep.as_str()).map(|p| Value::String(p.to_owned())).collect()
    };
    Ok(Value::Array(parts))
}

/// `join LIST SEP` (or `LIST | join SEP`).
fn join(args: &[Value]) -> Result<Value, FuncError> {
    let (a, b) = (arg(args, 0, "join")?, arg(args, 1, "join")?);
    let (list, sep) = if matches!(b, Value::Array(_)) { (b, a) } else { (a, b) };
    let sep = text(sep);
    match list {
        Value::Array(items) => Ok(Value::String(items.iter().map(text).collect::<Vec<_>>().join(&sep))),
        other => Ok(Value::String(text(other))),
    }
}

/// Go's `index COLLECTION KEY...`, and `COLLECTION | index KEY` (as
/// GripMock's examples write it): the collection is the first argument that
/// is a list or a map. A missing key or index is nil.
fn index(args: &[Value]) -> Result<Value, FuncError> {
    let at = args.iter().position(|v| matches!(v, Value::Array(_) | Value::Map(_) | Value::Object(_)));
    let Some(at) = at else {
        return match args {
            [one] => Ok(one.clone()),
            _ => Err(FuncError::Generic("index: no list or map to index".into())),
        };
    };
    let mut cur = args[at].clone();
    for key in args.iter().enumerate().filter(|(i, _)| *i != at).map(|(_, k)| k) {
        cur = match (&cur, key) {
            (Value::Array(items), k) => {
                let i = number(k).filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as usize);
                i.and_then(|i| items.get(i)).cloned().unwrap_or(Value::Nil)
            }
            (Value::Map(m) | Value::Object(m), k) => m.get(&text(k)).cloned().unwrap_or(Value::Nil),
            _ => Value::Nil,
        };
    }
    Ok(cur)
}

fn str(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(arg(args, 0, "str")?)))
}

fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::String(s) => J::String(s.clone()),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => J::from(i),
            (_, Some(u), _) => J::from(u),
            (_, _, Some(f)) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
            _ => J::Null,
        },
        Value::Array(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(m) | Value::Object(m) => {
            let mut sorted: Vec<_> = m.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            J::Object(sorted.into_iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(to_json(arg(args, 0, "json")?).to_string()))
}

fn one_number(args: &[Value], name: &str) -> Result<f64, FuncError> {
    Ok(number(arg(args, 0, name)?).unwrap_or(0.0))
}

fn int(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(one_number(args, "int")?.trunc() as i64))
}

fn float(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(one_number(args, "float")?))
}

/// A number as JSON writes it: whole values with one decimal (`3.0`).
fn decimal(args: &[Value]) -> Result<Value, FuncError> {
    let f = one_number(args, "decimal")?;
    Ok(Value::String(if f.fract() == 0.0 && f.is_finite() { format!("{f:.1}") } else { f.to_string() }))
}

fn round(args: &[Value]) -> Result<Value, FuncError> {
    Ok(num(one_number(args, "round")?.round()))
}

fn floor(args: &[Value]) -> Result<Value, FuncError> {
    Ok(num(one_number(args, "floor")?.floor()))
}

fn ceil(args: &[Value]) -> Result<Value, FuncError> {
    Ok(num(one_number(args, "ceil")?.ceil()))
}

fn add(args: &[Value]) -> Result<Value, FuncError> {
    Ok(num(numbers(args, "add")?.iter().sum()))
}

fn sub(args: &[Value]) -> Result<Value, FuncError> {
    let n = numbers(args, "sub")?;
    Ok(num(n.split_first().map_or(0.0, |(first, rest)| rest.iter().fold(*first, |a, b| a - b))))
}

fn mul(args: &[Value]) -> Result<Value, FuncError> {
    Ok(num(numbers(args, "mul")?.iter().product()))
}

/// Division by zero leaves the value as it is (GripMock's rule).
fn div(args: &[Value]) -> Result<Value, FuncError> {
    let n = numbers(args, "div")?;
    let q =
        n.split_first().map_or(0.0, |(first, rest)| rest.iter().fold(*first, |a, b| if *b == 0.0 { a } else { a / b }));
    Ok(num(q))
}

fn modulo(args: &[Value]) -> Result<Value, FuncError> {
    let n = numbers(args, "mod")?;
    Ok(num(match n.as_slice() {
        [a, b, ..] if *b != 0.0 => a % b,
        _ => 0.0,
    }))
}

fn avg(args: &[Value]) -> Result<Value, FuncError> {
    let n = numbers(args, "avg")?;
    Ok(num(if n.is_empty() { 0.0 } else { n.iter().sum::<f64>() / n.len() as f64 }))
}

fn min(args: &[Value]) -> Result<Value, FuncError> {
    Ok(num(numbers(args, "min")?.into_iter().reduce(f64::min).unwrap_or(0.0)))
}

fn max(args: &[Value]) -> Result<Value, FuncError> {
    Ok(num(numbers(args, "max")?.into_iter().reduce(f64::max).unwrap_or(0.0)))
}

fn compare(args: &[Value], name: &str) -> Result<std::cmp::Ordering, FuncError> {
    let a = number(arg(args, 0, name)?);
    let b = number(arg(args, 1, name)?);
    match (a, b) {
        (Some(a), Some(b)) => Ok(a.total_cmp(&b)),
        _ => Ok(text(&args[0]).cmp(&text(&args[1]))),
    }
}

fn gte(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Bool(compare(args, "gte")?.is_ge()))
}

fn lte(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Bool(compare(args, "lte")?.is_le()))
}

/// `extract LIST FIELD`: FIELD of each message (or the element at an index;
/// of a map, its value).
fn extract(args: &[Value]) -> Result<Value, FuncError> {
    let key = arg(args, 1, "extract")?;
    Ok(match arg(args, 0, "extract")? {
        Value::Map(m) | Value::Object(m) => m.get(&text(key)).cloned().unwrap_or(Value::Nil),
        Value::Array(items) => match key {
            Value::Number(n) => n
                .as_i64()
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| items.get(i))
                .cloned()
                .unwrap_or(Value::Nil),
            _ => {
                let k = text(key);
                Value::Array(
                    items
                        .iter()
                        .filter_map(|item| match item {
                            Value::Map(m) | Value::Object(m) => m.get(&k).cloned(),
                            _ => None,
                        })
                        .collect(),
                )
            }
        },
        _ => Value::Nil,
    })
}

fn byte_list(b: &[u8]) -> Value {
    Value::Array(b.iter().map(|x| Value::from(u64::from(*x))).collect())
}

fn list_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Array(items) => items.iter().filter_map(number).map(|f| f as u8).collect(),
        other => text(other).into_bytes(),
    }
}

fn b64(b: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
}

fn bytes(args: &[Value]) -> Result<Value, FuncError> {
    Ok(byte_list(text(arg(args, 0, "bytes")?).as_bytes()))
}

fn string2base64(args: &[Value]) -> Result<Value, FuncError> {
    Ok(b64(text(arg(args, 0, "string2base64")?).as_bytes()))
}

fn bytes2base64(args: &[Value]) -> Result<Value, FuncError> {
    Ok(b64(&list_bytes(arg(args, 0, "bytes2base64")?)))
}

fn parse_uuid(args: &[Value], name: &str) -> Result<uuid::Uuid, FuncError> {
    let s = text(arg(args, 0, name)?);
    uuid::Uuid::parse_str(&s).map_err(|_| FuncError::Generic(format!("{name}: `{s}` is not a UUID")))
}

fn uuid2base64(args: &[Value]) -> Result<Value, FuncError> {
    Ok(b64(parse_uuid(args, "uuid2base64")?.as_bytes()))
}

fn uuid2bytes(args: &[Value]) -> Result<Value, FuncError> {
    Ok(byte_list(parse_uuid(args, "uuid2bytes")?.as_bytes()))
}

/// The UUID's two halves as little-endian signed integers, as JSON
/// (`{"high":..,"low":..}`), as GripMock gives them.
fn uuid2int64(args: &[Value]) -> Result<Value, FuncError> {
    let b = *parse_uuid(args, "uuid2int64")?.as_bytes();
    let half = |s: &[u8]| i64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
    Ok(Value::String(format!(r#"{{"high":{},"low":{}}}"#, half(&b[..8]), half(&b[8..]))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    #[test]
    fn go_layouts_become_strftime() {
        let t = DateTime::parse_from_rfc3339("2026-03-04T05:06:07.123456789Z").unwrap().with_timezone(&Utc);
        let f = |layout: &str| t.format(&go_layout(layout)).to_string();
        assert_eq!(f("2006-01-02T15:04:05Z07:00"), "2026-03-04T05:06:07Z");
        assert_eq!(f("Jan _2 2006 3:04PM"), "Mar  4 2026 5:06AM");
        assert_eq!(f("Monday, 02-Jan-06 15:04:05.000 MST"), "Wednesday, 04-Mar-26 05:06:07.123 UTC");
        // `%` is literal; digits are Go's tokens (`1` is the month), as in Go.
        assert_eq!(f("15:04 %"), "05:06 %");
        assert_eq!(f("1/2"), "3/4");
    }

    #[test]
    fn helpers_follow_their_documented_signatures() {
        assert_eq!(split(&[s("a_b_c"), s("_")]).unwrap(), Value::Array(vec![s("a"), s("b"), s("c")]));
        assert_eq!(split(&[s("_"), s("a_b")]).unwrap(), Value::Array(vec![s("a"), s("b")]), "piped");
        assert_eq!(join(&[Value::Array(vec![s("a"), s("b")]), s("-")]).unwrap(), s("a-b"));
        assert_eq!(join(&[s("-"), Value::Array(vec![s("a"), s("b")])]).unwrap(), s("a-b"), "piped");
        let list = Value::Array(vec![s("a"), s("b")]);
        assert_eq!(index(&[list.clone(), Value::from(1)]).unwrap(), s("b"));
        assert_eq!(index(&[Value::from(1), list.clone()]).unwrap(), s("b"), "piped");
        assert_eq!(index(&[list, Value::from(9)]).unwrap(), Value::Nil);
        let t = s("2026-03-04T05:06:07Z");
        assert_eq!(format(&[t.clone(), s("2006")]).unwrap(), s("2026"));
        assert_eq!(format(&[s("2006"), t]).unwrap(), s("2026"), "piped");
        assert_eq!(add(&[Value::from(1), s("2.5")]).unwrap().to_string(), "3.5");
        assert_eq!(mul(&[Value::from(25.5), Value::from(2)]).unwrap().to_string(), "51");
        assert_eq!(div(&[Value::from(7), Value::from(0)]).unwrap().to_string(), "7");
        assert_eq!(avg(&[Value::Array(vec![Value::from(1), Value::from(2)])]).unwrap().to_string(), "1.5");
        assert_eq!(decimal(&[Value::from(3)]).unwrap(), s("3.0"));
        assert_eq!(unix(&[s("1970-01-01T00:01:00Z")]).unwrap().to_string(), "60");
        assert!(unix(&[s("yesterday")]).is_err());
        assert_eq!(uuid2base64(&[s("00000000-0000-0000-0000-000000000001")]).unwrap(), s("AAAAAAAAAAAAAAAAAAAAAQ=="));
        assert_eq!(uuid2int64(&[s("01000000-0000-0000-0200-000000000000")]).unwrap(), s(r#"{"high":1,"low":2}"#));
        let people = Value::Array(vec![
            Value::Map([("v".to_owned(), Value::from(1))].into()),
            Value::Map([("v".to_owned(), Value::from(2))].into()),
        ]);
        assert_eq!(extract(&[people, s("v")]).unwrap(), Value::Array(vec![Value::from(1), Value::from(2)]));
    }

    /// Random arguments of every kind: every helper returns, never panics.
    #[test]
    fn helpers_never_panic_on_any_arguments() {
        let pool = [
            Value::Nil,
            Value::NoValue,
            Value::Bool(true),
            s(""),
            s("x"),
            s("-3.5"),
            s("2026-01-01T00:00:00Z"),
            Value::from(i64::MIN),
            Value::from(u64::MAX),
            Value::from(f64::NAN),
            Value::from(1e300),
            Value::Array(vec![]),
            Value::Array(vec![s("1"), Value::from(2)]),
            Value::Map(Default::default()),
        ];
        let mut rng = fastrand::Rng::with_seed(11);
        for (_, f) in FUNCS {
            for _ in 0..200 {
                let args: Vec<Value> = (0..rng.usize(0..4)).map(|_| pool[rng.usize(..pool.len())].clone()).collect();
                let _ = f(&args);
            }
        }
    }
}
