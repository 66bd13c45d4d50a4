//! Further expression operators: the lazily evaluated `$cond` and `$switch`, and
//! operators on arrays, strings and objects (`$concatArrays`, `$slice`, `$reverseArray`,
//! `$objectToArray`, `$arrayToObject`, `$split`, `$substrCP`, `$strLenCP`), kept apart
//! from the core set in `expr.rs`.

use bson::{Bson, Document};

use super::arith::{is_number, to_f64};
use super::expr::{eval_opt, truthy};
use super::types::type_name;
use super::QueryError;

/// The operators this module evaluates.
pub const EXTRA_OPERATORS: &[&str] = &[
    "$switch",
    "$getField",
    "$setField",
    "$rand",
    "$concatArrays",
    "$slice",
    "$reverseArray",
    "$objectToArray",
    "$arrayToObject",
    "$split",
    "$substrCP",
    "$substr",
    "$strLenCP",
];

fn err(code: i32, name: &'static str, msg: impl Into<String>) -> QueryError {
    QueryError::new(code, name, msg)
}

fn tname(v: &Option<Bson>) -> &'static str {
    v.as_ref().map(type_name).unwrap_or("missing")
}

fn nullish(v: &Option<Bson>) -> bool {
    matches!(v, None | Some(Bson::Null) | Some(Bson::Undefined))
}

fn int(v: &Option<Bson>) -> Option<i64> {
    match v {
        Some(x) if is_number(x) && to_f64(x).fract() == 0.0 => Some(to_f64(x) as i64),
        _ => None,
    }
}

/// `$cond` in array (`[if, then, else]`) or document form; only the taken branch runs.
pub fn cond(operand: &Bson, root: &Document) -> Result<Option<Bson>, QueryError> {
    let (i, t, e) = match operand {
        Bson::Array(a) if a.len() == 3 => (&a[0], &a[1], &a[2]),
        Bson::Array(a) => {
            return Err(err(
                16020,
                "Location16020",
                format!(
                    "Expression $cond takes exactly 3 arguments. {} were passed in.",
                    a.len()
                ),
            ))
        }
        Bson::Document(d) => {
            let get = |k: &str| {
                d.get(k).ok_or_else(|| {
                    err(
                        17080,
                        "Location17080",
                        format!("Missing '{k}' parameter to $cond"),
                    )
                })
            };
            (get("if")?, get("then")?, get("else")?)
        }
        _ => {
            return Err(err(
                16020,
                "Location16020",
                "Expression $cond takes exactly 3 arguments. 1 were passed in.",
            ))
        }
    };
    if truthy(eval_opt(i, root)?.as_ref()) {
        eval_opt(t, root)
    } else {
        eval_opt(e, root)
    }
}

/// `$switch` evaluates lazily, so it gets the raw operand.
pub fn switch(operand: &Bson, root: &Document) -> Result<Option<Bson>, QueryError> {
    let Bson::Document(d) = operand else {
        return Err(err(
            40060,
            "Location40060",
            "$switch requires an object as an argument",
        ));
    };
    let Some(Bson::Array(branches)) = d.get("branches") else {
        return Err(err(
            40061,
            "Location40061",
            "$switch requires at least one branch",
        ));
    };
    for b in branches {
        let Bson::Document(b) = b else {
            return Err(err(
                40062,
                "Location40062",
                "$switch expected each branch to be an object",
            ));
        };
        let (Some(case), Some(then)) = (b.get("case"), b.get("then")) else {
            return Err(err(
                40064,
                "Location40064",
                "$switch requires each branch have a 'case' and 'then' expression",
            ));
        };
        if truthy(eval_opt(case, root)?.as_ref()) {
            return eval_opt(then, root);
        }
    }
    match d.get("default") {
        Some(e) => eval_opt(e, root),
        None => Err(err(
            40066,
            "Location40066",
            "$switch could not find a matching branch for an input, and no default was specified.",
        )),
    }
}

/// `$getField` (`{field, input}`, or the field name alone) and `$setField` (`{field,
/// input, value}`; `value: "$$REMOVE"` removes): a field by its literal name, dots and
/// `$` included, of `input` (default `$$CURRENT`).
pub fn field_op(op: &str, operand: &Bson, root: &Document) -> Result<Option<Bson>, QueryError> {
    let (field, input, value) = match operand {
        Bson::Document(d) if d.contains_key("field") => (
            d.get("field").unwrap_or(&Bson::Null),
            d.get("input"),
            d.get("value"),
        ),
        other => (other, None, None),
    };
    let name = match eval_opt(field, root)? {
        Some(Bson::String(s)) => s,
        other => {
            return Err(err(
                3041704,
                "Location3041704",
                format!(
                    "{op} requires 'field' to evaluate to type String, but got {}",
                    tname(&other)
                ),
            ))
        }
    };
    let input = match input {
        Some(e) => eval_opt(e, root)?,
        None => Some(Bson::Document(root.clone())),
    };
    if op == "$getField" {
        return Ok(match input {
            Some(Bson::Document(d)) => d.get(&name).cloned(),
            _ => None,
        });
    }
    let mut doc = match input {
        Some(Bson::Document(d)) => d,
        v if nullish(&v) => return Ok(Some(Bson::Null)),
        other => {
            return Err(err(
                4161105,
                "Location4161105",
                format!(
                    "$setField requires 'input' to evaluate to type Object, but got {}",
                    tname(&other)
                ),
            ))
        }
    };
    match value.map(|v| eval_opt(v, root)).transpose()?.flatten() {
        Some(v) => {
            doc.insert(name, v);
        }
        None => {
            doc.remove(&name);
        }
    }
    Ok(Some(Bson::Document(doc)))
}

/// Evaluate one of [`EXTRA_OPERATORS`] (other than `$switch`) on evaluated arguments.
pub fn operator(op: &str, a: Vec<Option<Bson>>) -> Result<Option<Bson>, QueryError> {
    match op {
        "$concatArrays" => {
            let mut out = Vec::new();
            for x in &a {
                match x {
                    _ if nullish(x) => return Ok(Some(Bson::Null)),
                    Some(Bson::Array(v)) => out.extend(v.iter().cloned()),
                    other => return Err(err(28664, "Location28664", format!("$concatArrays only supports arrays, not {}", tname(other)))),
                }
            }
            Ok(Some(Bson::Array(out)))
        }
        "$slice" => {
            if a.len() < 2 || a.len() > 3 {
                return Err(err(28667, "Location28667", format!("Expression $slice takes at least 2 arguments, and at most 3, but {} were passed in.", a.len())));
            }
            if a.iter().any(nullish) {
                return Ok(Some(Bson::Null));
            }
            let Some(Bson::Array(arr)) = &a[0] else {
                return Err(err(28724, "Location28724", format!("First argument to $slice must be an array, but is of type: {}", tname(&a[0]))));
            };
            let len = arr.len() as i64;
            let (start, n) = if a.len() == 2 {
                let n = int(&a[1]).ok_or_else(|| err(28725, "Location28725", "Second argument to $slice must be a numeric value"))?;
                if n >= 0 { (0, n) } else { ((len + n).max(0), len) }
            } else {
                let p = int(&a[1]).ok_or_else(|| err(28725, "Location28725", "Second argument to $slice must be a numeric value"))?;
                let n = int(&a[2]).filter(|n| *n > 0).ok_or_else(|| err(28729, "Location28729", "Third argument to $slice must be positive"))?;
                (if p >= 0 { p.min(len) } else { (len + p).max(0) }, n)
            };
            Ok(Some(Bson::Array(arr.iter().skip(start as usize).take(n.max(0) as usize).cloned().collect())))
        }
        "$reverseArray" => match a.as_slice() {
            [x] if nullish(x) => Ok(Some(Bson::Null)),
            [Some(Bson::Array(v))] => Ok(Some(Bson::Array(v.iter().rev().cloned().collect()))),
            [x] => Err(err(34435, "Location34435", format!("The argument to $reverseArray must be an array, but was of type: {}", tname(x)))),
            _ => Err(arity(op, 1, a.len())),
        },
        "$objectToArray" => match a.as_slice() {
            [x] if nullish(x) => Ok(Some(Bson::Null)),
            [Some(Bson::Document(d))] => Ok(Some(Bson::Array(
                d.iter().map(|(k, v)| Bson::Document(bson::doc! {"k": k.clone(), "v": v.clone()})).collect(),
            ))),
            [x] => Err(err(40390, "Location40390", format!("$objectToArray requires a document input, found: {}", tname(x)))),
            _ => Err(arity(op, 1, a.len())),
        },
        "$arrayToObject" => match a.as_slice() {
            [x] if nullish(x) => Ok(Some(Bson::Null)),
            [Some(Bson::Array(items))] => {
                let mut out = Document::new();
                for it in items {
                    match it {
                        Bson::Document(d) if d.len() == 2 => match (d.get("k"), d.get("v")) {
                            (Some(Bson::String(k)), Some(v)) => {
                                out.insert(k.clone(), v.clone());
                            }
                            _ => return Err(err(40392, "Location40392", "$arrayToObject requires an object keys of 'k' and 'v'")),
                        },
                        Bson::Array(pair) if pair.len() == 2 => match &pair[0] {
                            Bson::String(k) => {
                                out.insert(k.clone(), pair[1].clone());
                            }
                            _ => return Err(err(40395, "Location40395", "$arrayToObject requires an array of key-value pairs, where the key must be of type string")),
                        },
                        _ => return Err(err(40398, "Location40398", "Unrecognised input type format for $arrayToObject")),
                    }
                }
                Ok(Some(Bson::Document(out)))
            }
            [x] => Err(err(40386, "Location40386", format!("$arrayToObject requires an array input, found: {}", tname(x)))),
            _ => Err(arity(op, 1, a.len())),
        },
        "$split" => match a.as_slice() {
            [x, _] | [_, x] if nullish(x) => Ok(Some(Bson::Null)),
            [Some(Bson::String(s)), Some(Bson::String(sep))] => {
                if sep.is_empty() {
                    return Err(err(40087, "Location40087", "$split requires a non-empty separator"));
                }
                Ok(Some(Bson::Array(s.split(sep.as_str()).map(|p| Bson::String(p.to_string())).collect())))
            }
            [x, _] => Err(err(40085, "Location40085", format!("$split requires an expression that evaluates to a string as a first argument, found: {}", tname(x)))),
            _ => Err(arity(op, 2, a.len())),
        },
        "$substrCP" | "$substr" => {
            if a.len() != 3 {
                return Err(arity(op, 3, a.len()));
            }
            let s = match &a[0] {
                x if nullish(x) => String::new(),
                Some(Bson::String(s)) => s.clone(),
                Some(v) => super::convert::to_string(v).unwrap_or_default(),
                None => String::new(),
            };
            let (Some(start), Some(n)) = (int(&a[1]), int(&a[2])) else {
                return Err(err(34450, "Location34450", format!("{op}: starting index and length must be numeric")));
            };
            let start = usize::try_from(start).unwrap_or(0);
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            Ok(Some(Bson::String(s.chars().skip(start).take(n).collect())))
        }
        "$strLenCP" => match a.as_slice() {
            [Some(Bson::String(s))] => Ok(Some(Bson::Int32(s.chars().count() as i32))),
            [x] => Err(err(34471, "Location34471", format!("$strLenCP requires a string argument, found: {}", tname(x)))),
            _ => Err(arity(op, 1, a.len())),
        },
        _ => Err(QueryError::new(168, "InvalidPipelineOperator", format!("Unrecognized expression '{op}'"))),
    }
}

fn arity(op: &str, n: usize, got: usize) -> QueryError {
    err(
        16020,
        "Location16020",
        format!("Expression {op} takes exactly {n} arguments. {got} were passed in."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn ev(e: Document) -> Option<Bson> {
        eval_opt(
            &Bson::Document(e),
            &doc! {"l": [1, 2, 3], "s": "a,b", "o": {"x": 1}},
        )
        .expect("evaluates")
    }

    #[test]
    fn array_and_object_operators() {
        assert_eq!(
            ev(doc! {"$concatArrays": ["$l", [4]]}),
            Some(Bson::Array(vec![1.into(), 2.into(), 3.into(), 4.into()]))
        );
        assert_eq!(
            ev(doc! {"$slice": ["$l", -2]}),
            Some(Bson::Array(vec![2.into(), 3.into()]))
        );
        assert_eq!(
            ev(doc! {"$slice": ["$l", 1, 1]}),
            Some(Bson::Array(vec![2.into()]))
        );
        assert_eq!(
            ev(doc! {"$reverseArray": "$l"}),
            Some(Bson::Array(vec![3.into(), 2.into(), 1.into()]))
        );
        assert_eq!(
            ev(doc! {"$objectToArray": "$o"}),
            Some(Bson::Array(vec![Bson::Document(doc! {"k": "x", "v": 1})]))
        );
        assert_eq!(
            ev(doc! {"$arrayToObject": [[["y", 2]]]}),
            Some(Bson::Document(doc! {"y": 2}))
        );
    }

    #[test]
    fn string_operators_and_switch() {
        assert_eq!(
            ev(doc! {"$split": ["$s", ","]}),
            Some(Bson::Array(vec!["a".into(), "b".into()]))
        );
        assert_eq!(ev(doc! {"$substrCP": ["$s", 2, 5]}), Some("b".into()));
        assert_eq!(ev(doc! {"$strLenCP": "$s"}), Some(Bson::Int32(3)));
        let sw = doc! {"$switch": {"branches": [{"case": {"$gt": [{"$size": "$l"}, 5]}, "then": "big"}], "default": "small"}};
        assert_eq!(ev(sw), Some("small".into()));
    }
}
