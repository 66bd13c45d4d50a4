//! Aggregation expressions (`$add`, `$cond`, `"$field.path"`, `$$ROOT`…) evaluated
//! against one document. "Missing" is kept apart from null (`Option::None`) because
//! MongoDB treats them differently (`$type` says "missing", `$addFields` drops the field).

use std::cmp::Ordering;

use bson::{Bson, DateTime, Document};

use super::arith::{self, is_number, to_f64};
use super::compare::compare;
pub use super::convert::reduce;
use super::convert::{convert, int_rem, to_string};
use super::expr_extra::{self, EXTRA_OPERATORS};
use super::types::type_name;
use super::QueryError;

/// Every expression operator this module evaluates.
const OPERATORS: &[&str] = &[
    "$literal",
    "$add",
    "$subtract",
    "$multiply",
    "$divide",
    "$mod",
    "$abs",
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$cmp",
    "$and",
    "$or",
    "$not",
    "$cond",
    "$ifNull",
    "$type",
    "$mergeObjects",
    "$concat",
    "$toString",
    "$size",
    "$in",
    "$arrayElemAt",
    "$max",
    "$min",
    "$sum",
    "$avg",
    "$toLower",
    "$toUpper",
    "$isArray",
    "$toInt",
    "$toLong",
    "$toDouble",
    "$toBool",
    "$getField",
];

fn err(code: i32, msg: impl Into<String>) -> QueryError {
    QueryError::new(code, location_name(code), msg)
}

/// MongoDB's code name for the numeric "location" errors this module raises.
fn location_name(code: i32) -> &'static str {
    match code {
        2 => "BadValue",
        15983 => "Location15983",
        16020 => "Location16020",
        16412 => "Location16412",
        16554 => "Location16554",
        16555 => "Location16555",
        16556 => "Location16556",
        16609 => "Location16609",
        16612 => "Location16612",
        16702 => "Location16702",
        16872 => "Location16872",
        17080 => "Location17080",
        17124 => "Location17124",
        17276 => "Location17276",
        28689 => "Location28689",
        28691 => "Location28691",
        28765 => "Location28765",
        40081 => "Location40081",
        40400 => "Location40400",
        1257300 => "Location1257300",
        3041704 => "Location3041704",
        _ => "Location",
    }
}

/// MongoDB truthiness: false, null, undefined, missing and numeric zero are false.
pub fn truthy(v: Option<&Bson>) -> bool {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) | Some(Bson::Boolean(false)) => false,
        Some(x) if is_number(x) => to_f64(x) != 0.0,
        Some(_) => true,
    }
}

/// Check an expression's shape (known operators, single-key operator documents).
pub fn validate(e: &Bson) -> Result<(), QueryError> {
    match e {
        Bson::Document(d) => {
            let first = d.keys().next();
            if let Some(k) = first.filter(|k| k.starts_with('$')) {
                if d.len() > 1 {
                    return Err(err(
                        15983,
                        format!("an expression specification must contain exactly one field, the name of the expression. Found {} fields in {d}", d.len()),
                    ));
                }
                if !OPERATORS.contains(&k.as_str()) && !EXTRA_OPERATORS.contains(&k.as_str()) {
                    return Err(unknown(k));
                }
                if k == "$literal" {
                    return Ok(());
                }
            }
            d.values().try_for_each(validate)
        }
        Bson::Array(a) => a.iter().try_for_each(validate),
        _ => Ok(()),
    }
}

fn unknown(op: &str) -> QueryError {
    QueryError::new(
        168,
        "InvalidPipelineOperator",
        format!("Unrecognized expression '{op}'"),
    )
}

/// Evaluate `e` with `root` as `$$ROOT`/`$$CURRENT`; `None` means missing.
pub fn eval_opt(e: &Bson, root: &Document) -> Result<Option<Bson>, QueryError> {
    match e {
        Bson::String(s) if s.starts_with("$$") => variable(&s[2..], root),
        Bson::String(s) if s.starts_with('$') => {
            let p = &s[1..];
            if p.is_empty() {
                return Err(err(16872, "'$' by itself is not a valid FieldPath"));
            }
            Ok(field_path(
                &Bson::Document(root.clone()),
                &p.split('.').collect::<Vec<_>>(),
            ))
        }
        Bson::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for x in a {
                out.push(eval_opt(x, root)?.unwrap_or(Bson::Null));
            }
            Ok(Some(Bson::Array(out)))
        }
        Bson::Document(d) => match d.keys().next() {
            Some(k) if k.starts_with('$') => {
                if d.len() > 1 {
                    validate(e)?;
                }
                // Unwrap is safe: `k` came from this document.
                operator(k, d.get(k).unwrap_or(&Bson::Null), root)
            }
            _ => {
                let mut out = Document::new();
                for (k, v) in d {
                    if k.contains('.') {
                        return Err(err(16412, format!("FieldPath field names may not contain '.'. Consider using $getField or $setField. ({k})")));
                    }
                    if let Some(x) = eval_opt(v, root)? {
                        out.insert(k.clone(), x);
                    }
                }
                Ok(Some(Bson::Document(out)))
            }
        },
        other => Ok(Some(other.clone())),
    }
}

fn variable(name: &str, root: &Document) -> Result<Option<Bson>, QueryError> {
    let mut parts = name.split('.');
    let base = match parts.next().unwrap_or("") {
        "ROOT" | "CURRENT" => Bson::Document(root.clone()),
        "NOW" => Bson::DateTime(DateTime::now()),
        "REMOVE" => return Ok(None),
        other => {
            return Err(err(17276, format!("Use of undefined variable: {other}")));
        }
    };
    let rest: Vec<&str> = parts.collect();
    Ok(field_path(&base, &rest))
}

/// Aggregation field-path semantics: arrays map over their elements, missing dropped.
fn field_path(v: &Bson, parts: &[&str]) -> Option<Bson> {
    let Some((first, rest)) = parts.split_first() else {
        return Some(v.clone());
    };
    match v {
        Bson::Document(d) => d.get(*first).and_then(|x| field_path(x, rest)),
        Bson::Array(a) => Some(Bson::Array(
            a.iter()
                .filter(|x| matches!(x, Bson::Document(_) | Bson::Array(_)))
                .filter_map(|x| field_path(x, parts))
                .collect(),
        )),
        _ => None,
    }
}

/// Evaluate an operator's arguments as a list (a non-array operand is one argument).
fn args(operand: &Bson, root: &Document) -> Result<Vec<Option<Bson>>, QueryError> {
    match operand {
        Bson::Array(a) => a.iter().map(|x| eval_opt(x, root)).collect(),
        other => Ok(vec![eval_opt(other, root)?]),
    }
}

fn arity(op: &str, a: &[Option<Bson>], n: usize) -> Result<(), QueryError> {
    if a.len() != n {
        return Err(err(
            16020,
            format!(
                "Expression {op} takes exactly {n} arguments. {} were passed in.",
                a.len()
            ),
        ));
    }
    Ok(())
}

fn nullish(v: &Option<Bson>) -> bool {
    matches!(v, None | Some(Bson::Null) | Some(Bson::Undefined))
}

fn tname(v: &Option<Bson>) -> &'static str {
    v.as_ref().map(type_name).unwrap_or("missing")
}

/// Compare for expressions: missing sorts as undefined (below null).
fn cmp_opt(a: &Option<Bson>, b: &Option<Bson>) -> Ordering {
    let u = Bson::Undefined;
    compare(a.as_ref().unwrap_or(&u), b.as_ref().unwrap_or(&u))
}

fn operator(op: &str, operand: &Bson, root: &Document) -> Result<Option<Bson>, QueryError> {
    if op == "$literal" {
        return Ok(Some(operand.clone()));
    }
    if op == "$cond" {
        return expr_extra::cond(operand, root);
    }
    if op == "$switch" {
        return expr_extra::switch(operand, root);
    }
    if op == "$rand" {
        let b = crate::store::random_bytes16();
        let n = u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])) >> 11;
        return Ok(Some(Bson::Double(n as f64 / (1u64 << 53) as f64)));
    }
    if op == "$getField" || op == "$setField" {
        return expr_extra::field_op(op, operand, root);
    }
    if EXTRA_OPERATORS.contains(&op) {
        return expr_extra::operator(op, args(operand, root)?);
    }
    if !OPERATORS.contains(&op) {
        return Err(unknown(op));
    }
    let a = args(operand, root)?;
    let some = |b: Bson| Ok(Some(b));
    match op {
        "$add" => {
            let mut acc = Bson::Int32(0);
            let mut date: Option<i64> = None;
            for x in &a {
                match x {
                    _ if nullish(x) => return Ok(Some(Bson::Null)),
                    Some(Bson::DateTime(d)) => {
                        if date.is_some() {
                            return Err(err(16612, "only one date allowed in an $add expression"));
                        }
                        date = Some(d.timestamp_millis());
                    }
                    Some(v) => {
                        acc = arith::add(&acc, v).ok_or_else(|| {
                            err(
                                16554,
                                format!(
                                    "$add only supports numeric or date types, not {}",
                                    type_name(v)
                                ),
                            )
                        })?
                    }
                    None => unreachable!("nullish covers missing"),
                }
            }
            match date {
                Some(ms) => some(Bson::DateTime(DateTime::from_millis(
                    ms.saturating_add(to_f64(&acc).round() as i64),
                ))),
                None => some(acc),
            }
        }
        "$subtract" => {
            arity(op, &a, 2)?;
            if nullish(&a[0]) || nullish(&a[1]) {
                return some(Bson::Null);
            }
            match (a[0].as_ref(), a[1].as_ref()) {
                (Some(Bson::DateTime(x)), Some(Bson::DateTime(y))) => some(Bson::Int64(
                    x.timestamp_millis().saturating_sub(y.timestamp_millis()),
                )),
                (Some(Bson::DateTime(x)), Some(n)) if is_number(n) => {
                    some(Bson::DateTime(DateTime::from_millis(
                        x.timestamp_millis()
                            .saturating_sub(to_f64(n).round() as i64),
                    )))
                }
                (Some(x), Some(y)) => arith::sub(x, y).map(Some).ok_or_else(|| {
                    err(
                        16556,
                        format!("cant $subtract a {} from a {}", type_name(y), type_name(x)),
                    )
                }),
                _ => some(Bson::Null),
            }
        }
        "$multiply" => {
            let mut acc = Bson::Int32(1);
            for x in &a {
                match x {
                    _ if nullish(x) => return some(Bson::Null),
                    Some(v) => {
                        acc = arith::mul(&acc, v).ok_or_else(|| {
                            err(
                                16555,
                                format!(
                                    "$multiply only supports numeric types, not {}",
                                    type_name(v)
                                ),
                            )
                        })?
                    }
                    None => unreachable!("nullish covers missing"),
                }
            }
            some(acc)
        }
        "$divide" | "$mod" => {
            arity(op, &a, 2)?;
            if nullish(&a[0]) || nullish(&a[1]) {
                return some(Bson::Null);
            }
            let (x, y) = (
                a[0].clone().unwrap_or(Bson::Null),
                a[1].clone().unwrap_or(Bson::Null),
            );
            if !is_number(&x) || !is_number(&y) {
                return Err(err(
                    16609,
                    format!(
                        "{op} only supports numeric types, not {} and {}",
                        type_name(&x),
                        type_name(&y)
                    ),
                ));
            }
            if to_f64(&y) == 0.0 {
                return Err(err(
                    if op == "$mod" { 16610 } else { 2 },
                    format!("can't {op} by zero"),
                ));
            }
            if op == "$divide" {
                let r = to_f64(&x) / to_f64(&y);
                if matches!(x, Bson::Decimal128(_)) || matches!(y, Bson::Decimal128(_)) {
                    return some(arith::decimal_from_f64(r));
                }
                return some(Bson::Double(r));
            }
            match (&x, &y) {
                (Bson::Int32(_) | Bson::Int64(_), Bson::Int32(_) | Bson::Int64(_)) => {
                    some(int_rem(&x, &y))
                }
                _ => some(Bson::Double(to_f64(&x) % to_f64(&y))),
            }
        }
        "$abs" => {
            arity(op, &a, 1)?;
            match &a[0] {
                x if nullish(x) => some(Bson::Null),
                Some(Bson::Int32(i)) => some(
                    i.checked_abs()
                        .map(Bson::Int32)
                        .unwrap_or(Bson::Int64(-(i64::from(*i)))),
                ),
                Some(Bson::Int64(i)) => some(Bson::Int64(i.wrapping_abs())),
                Some(v) if is_number(v) => some(Bson::Double(to_f64(v).abs())),
                x => Err(err(
                    28765,
                    format!("$abs only supports numeric types, not {}", tname(x)),
                )),
            }
        }
        "$eq" | "$ne" | "$gt" | "$gte" | "$lt" | "$lte" | "$cmp" => {
            arity(op, &a, 2)?;
            let o = cmp_opt(&a[0], &a[1]);
            some(match op {
                "$eq" => Bson::Boolean(o == Ordering::Equal),
                "$ne" => Bson::Boolean(o != Ordering::Equal),
                "$gt" => Bson::Boolean(o == Ordering::Greater),
                "$gte" => Bson::Boolean(o != Ordering::Less),
                "$lt" => Bson::Boolean(o == Ordering::Less),
                "$lte" => Bson::Boolean(o != Ordering::Greater),
                _ => Bson::Int32(o as i32),
            })
        }
        "$and" => some(Bson::Boolean(a.iter().all(|x| truthy(x.as_ref())))),
        "$or" => some(Bson::Boolean(a.iter().any(|x| truthy(x.as_ref())))),
        "$not" => {
            arity(op, &a, 1)?;
            some(Bson::Boolean(!truthy(a[0].as_ref())))
        }
        "$ifNull" => {
            if a.len() < 2 {
                return Err(err(
                    1257300,
                    format!("$ifNull needs at least two arguments, had: {}", a.len()),
                ));
            }
            let last = a.len() - 1;
            for x in &a[..last] {
                if !nullish(x) {
                    return Ok(x.clone());
                }
            }
            Ok(a[last].clone())
        }
        "$type" => {
            arity(op, &a, 1)?;
            some(Bson::String(tname(&a[0]).to_string()))
        }
        "$mergeObjects" => {
            let mut out = Document::new();
            for x in &a {
                match x {
                    _ if nullish(x) => {}
                    Some(Bson::Document(d)) => {
                        for (k, v) in d {
                            out.insert(k.clone(), v.clone());
                        }
                    }
                    Some(v) => {
                        return Err(err(
                            40400,
                            format!(
                                "$mergeObjects requires object inputs, but input {v} is of type {}",
                                type_name(v)
                            ),
                        ))
                    }
                    None => {}
                }
            }
            some(Bson::Document(out))
        }
        "$concat" => {
            let mut s = String::new();
            for x in &a {
                match x {
                    _ if nullish(x) => return some(Bson::Null),
                    Some(Bson::String(p)) => s.push_str(p),
                    other => {
                        return Err(err(
                            16702,
                            format!("$concat only supports strings, not {}", tname(other)),
                        ))
                    }
                }
            }
            some(Bson::String(s))
        }
        "$toLower" | "$toUpper" => {
            arity(op, &a, 1)?;
            let s = match &a[0] {
                x if nullish(x) => String::new(),
                Some(Bson::String(s)) => s.clone(),
                Some(v) => to_string(v).unwrap_or_default(),
                None => String::new(),
            };
            some(Bson::String(if op == "$toLower" {
                s.to_lowercase()
            } else {
                s.to_uppercase()
            }))
        }
        "$toString" => {
            arity(op, &a, 1)?;
            match &a[0] {
                x if nullish(x) => some(Bson::Null),
                Some(v) => to_string(v).map(|s| Some(Bson::String(s))).ok_or_else(|| {
                    QueryError::new(241, "ConversionFailure", format!("Unsupported conversion from {} to string in $convert with no onError value", type_name(v)))
                }),
                None => some(Bson::Null),
            }
        }
        "$toInt" | "$toLong" | "$toDouble" | "$toBool" => {
            arity(op, &a, 1)?;
            convert(op, &a[0])
        }
        "$size" => {
            arity(op, &a, 1)?;
            match &a[0] {
                Some(Bson::Array(v)) => some(Bson::Int32(v.len() as i32)),
                x => Err(err(
                    17124,
                    format!(
                        "The argument to $size must be an array. Type of argument was: {}",
                        tname(x)
                    ),
                )),
            }
        }
        "$isArray" => {
            arity(op, &a, 1)?;
            some(Bson::Boolean(matches!(a[0], Some(Bson::Array(_)))))
        }
        "$in" => {
            arity(op, &a, 2)?;
            match &a[1] {
                Some(Bson::Array(v)) => {
                    some(Bson::Boolean(v.iter().any(|x| {
                        cmp_opt(&Some(x.clone()), &a[0]) == Ordering::Equal
                    })))
                }
                x => Err(err(
                    40081,
                    format!(
                        "$in requires an array as a second argument, found: {}",
                        tname(x)
                    ),
                )),
            }
        }
        "$arrayElemAt" => {
            arity(op, &a, 2)?;
            if nullish(&a[0]) || nullish(&a[1]) {
                return some(Bson::Null);
            }
            let Some(Bson::Array(arr)) = &a[0] else {
                return Err(err(
                    28689,
                    format!(
                        "$arrayElemAt's first argument must be an array, but is {}",
                        tname(&a[0])
                    ),
                ));
            };
            let idx = match &a[1] {
                Some(v) if is_number(v) && to_f64(v).fract() == 0.0 => to_f64(v) as i64,
                x => {
                    return Err(err(
                        28691,
                        format!(
                            "$arrayElemAt's second argument must be a numeric value, but is {}",
                            tname(x)
                        ),
                    ))
                }
            };
            let i = if idx < 0 { arr.len() as i64 + idx } else { idx };
            Ok(usize::try_from(i).ok().and_then(|i| arr.get(i)).cloned())
        }
        "$max" | "$min" | "$sum" | "$avg" => {
            let items: Vec<Bson> = match (a.len(), a.first()) {
                (1, Some(Some(Bson::Array(v)))) => v.clone(),
                _ => a.into_iter().flatten().collect(),
            };
            some(reduce(op, &items))
        }
        "$getField" => {
            let (field, input) = match operand {
                Bson::Document(d) => (
                    eval_opt(d.get("field").unwrap_or(&Bson::Null), root)?,
                    match d.get("input") {
                        Some(i) => eval_opt(i, root)?,
                        None => Some(Bson::Document(root.clone())),
                    },
                ),
                other => (eval_opt(other, root)?, Some(Bson::Document(root.clone()))),
            };
            let Some(Bson::String(f)) = field else {
                return Err(err(
                    3041704,
                    "$getField requires 'field' to evaluate to type String",
                ));
            };
            match input {
                Some(Bson::Document(d)) => Ok(d.get(&f).cloned()),
                _ => Ok(None),
            }
        }
        _ => Err(unknown(op)),
    }
}

#[cfg(test)]
#[path = "expr_tests.rs"]
mod tests;
