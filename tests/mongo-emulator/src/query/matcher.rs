//! Query filters: parsed once into a small tree (so an invalid filter errors even when
//! no document is examined) and then evaluated against documents with MongoDB's
//! semantics: dotted paths fan out over arrays, a predicate on an array matches the
//! whole array or any element, `{f: null}` matches a missing `f`, range operators stay
//! inside one type bracket.

use std::cmp::Ordering;

use bson::{Bson, Document};
use regex::Regex;

use super::compare::{as_num, canonical_type, compare, values_equal};
use super::path::lookup;
use super::types::{alias_number, type_number, valid_type_number};
use super::{expr, QueryError};

/// A parsed filter.
#[derive(Debug, Clone)]
pub enum Node {
    /// Every child matches.
    And(Vec<Node>),
    /// Some child matches.
    Or(Vec<Node>),
    /// No child matches.
    Nor(Vec<Node>),
    /// Every predicate holds for the values at a dotted path.
    Path(String, Vec<Pred>),
    /// An aggregation expression, true when truthy.
    Expr(Bson),
    /// `$alwaysTrue` / `$alwaysFalse`.
    Const(bool),
}

/// A range operator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CmpOp {
    /// `$gt`.
    Gt,
    /// `$gte`.
    Gte,
    /// `$lt`.
    Lt,
    /// `$lte`.
    Lte,
}

/// One entry of an `$in`/`$nin`/`$all` list.
#[derive(Debug, Clone)]
pub enum Item {
    /// Equality with a value.
    Value(Bson),
    /// A regular expression applied to strings.
    Pattern(Regex, Bson),
}

/// A predicate on the value(s) at one path.
#[derive(Debug, Clone)]
pub enum Pred {
    /// `$eq` (and implicit equality).
    Eq(Bson),
    /// `$ne`.
    Ne(Bson),
    /// `$gt $gte $lt $lte`.
    Cmp(CmpOp, Bson),
    /// `$in`.
    In(Vec<Item>),
    /// `$nin`.
    Nin(Vec<Item>),
    /// `$exists`.
    Exists(bool),
    /// `$type`; `None` is the `"number"` alias.
    Type(Vec<Option<i32>>),
    /// `$regex` (with `$options`) or a regex literal.
    Regex(Regex, Bson),
    /// `$size`.
    Size(i64),
    /// `$all` (each entry is a predicate list that must hold).
    All(Vec<Vec<Pred>>),
    /// `$elemMatch` on values: some element satisfies every predicate.
    ElemValue(Vec<Pred>),
    /// `$elemMatch` on documents: some document element matches the sub-filter.
    ElemDoc(Box<Node>),
    /// `$mod: [divisor, remainder]`.
    Mod(i64, i64),
    /// `$not`.
    Not(Vec<Pred>),
}

fn bad(msg: impl Into<String>) -> QueryError {
    QueryError::bad_value(msg)
}

/// Compile a MongoDB regex (pattern + options `imsx`) into a Rust regex.
pub fn build_regex(pattern: &str, options: &str) -> Result<Regex, QueryError> {
    let mut flags = String::new();
    for c in options.chars() {
        match c {
            'i' | 'm' | 's' | 'x' => flags.push(c),
            'u' => {}
            other => {
                return Err(QueryError::new(
                    51108,
                    "Location51108",
                    format!("invalid flag in regex options: {other}"),
                ))
            }
        }
    }
    let full = if flags.is_empty() {
        pattern.to_string()
    } else {
        format!("(?{flags}){pattern}")
    };
    Regex::new(&full).map_err(|e| {
        QueryError::new(
            51091,
            "Location51091",
            format!("Regular expression is invalid: {e}"),
        )
    })
}

/// Parse a filter document.
pub fn parse(filter: &Document) -> Result<Node, QueryError> {
    let mut children = Vec::new();
    for (k, v) in filter {
        children.push(parse_entry(k, v)?);
    }
    Ok(Node::And(children))
}

fn parse_entry(k: &str, v: &Bson) -> Result<Node, QueryError> {
    if let Some(op) = k.strip_prefix('$') {
        return match op {
            "and" | "or" | "nor" => {
                let Bson::Array(items) = v else {
                    return Err(bad(format!("{k} must be an array")));
                };
                if items.is_empty() {
                    return Err(bad("$and/$or/$nor must be a nonempty array"));
                }
                let mut nodes = Vec::new();
                for it in items {
                    let Bson::Document(d) = it else {
                        return Err(bad("$or/$and/$nor entries need to be full objects"));
                    };
                    nodes.push(parse(d)?);
                }
                Ok(match op {
                    "and" => Node::And(nodes),
                    "or" => Node::Or(nodes),
                    _ => Node::Nor(nodes),
                })
            }
            "expr" => {
                expr::validate(v)?;
                Ok(Node::Expr(v.clone()))
            }
            "comment" => Ok(Node::Const(true)),
            "alwaysTrue" => Ok(Node::Const(true)),
            "alwaysFalse" => Ok(Node::Const(false)),
            "where" | "text" | "jsonSchema" | "sampleRate" => {
                Err(bad(format!("{k} is not supported by the emulator")))
            }
            _ => Err(bad(format!(
                "unknown top level operator: {k}. If you have a field name that starts with a \
                 '$' symbol, consider using $getField or $setField."
            ))),
        };
    }
    Ok(Node::Path(k.to_string(), parse_value(v)?))
}

/// Whether a document is an operator document (`{$gt: 1}`) rather than a literal.
fn is_operator_doc(d: &Document) -> bool {
    match d.keys().next() {
        Some(k) => k.starts_with('$') && k != "$ref" && k != "$id" && k != "$db",
        None => false,
    }
}

fn parse_value(v: &Bson) -> Result<Vec<Pred>, QueryError> {
    match v {
        Bson::Document(d) if is_operator_doc(d) => parse_ops(d),
        Bson::RegularExpression(r) => Ok(vec![Pred::Regex(
            build_regex(&r.pattern, &r.options)?,
            v.clone(),
        )]),
        _ => Ok(vec![Pred::Eq(v.clone())]),
    }
}

fn items(op: &str, v: &Bson) -> Result<Vec<Item>, QueryError> {
    let Bson::Array(a) = v else {
        return Err(bad(format!("{op} needs an array")));
    };
    a.iter()
        .map(|x| match x {
            Bson::RegularExpression(r) => Ok(Item::Pattern(
                build_regex(&r.pattern, &r.options)?,
                x.clone(),
            )),
            Bson::Document(d) if is_operator_doc(d) => Err(bad("cannot nest $ under $in")),
            _ => Ok(Item::Value(x.clone())),
        })
        .collect()
}

fn as_int(v: &Bson) -> Option<i64> {
    match v {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        // MongoDB accepts doubles with an integral value where integers are expected.
        Bson::Double(f) if f.fract() == 0.0 && f.is_finite() => Some(*f as i64),
        Bson::Decimal128(_) => as_num(v).and_then(|n| match n {
            super::compare::Num::Float(f) if f.fract() == 0.0 => Some(f as i64),
            _ => None,
        }),
        _ => None,
    }
}

fn parse_ops(d: &Document) -> Result<Vec<Pred>, QueryError> {
    let mut preds = Vec::new();
    let options = d.get("$options");
    for (k, v) in d {
        let p = match k.as_str() {
            "$eq" => Pred::Eq(v.clone()),
            "$ne" => Pred::Ne(v.clone()),
            "$gt" => Pred::Cmp(CmpOp::Gt, v.clone()),
            "$gte" => Pred::Cmp(CmpOp::Gte, v.clone()),
            "$lt" => Pred::Cmp(CmpOp::Lt, v.clone()),
            "$lte" => Pred::Cmp(CmpOp::Lte, v.clone()),
            "$in" => Pred::In(items("$in", v)?),
            "$nin" => Pred::Nin(items("$nin", v)?),
            "$exists" => Pred::Exists(expr::truthy(Some(v))),
            "$type" => Pred::Type(parse_types(v)?),
            "$regex" => {
                let opts = match options {
                    None => String::new(),
                    Some(Bson::String(s)) => s.clone(),
                    Some(_) => return Err(bad("$options has to be a string")),
                };
                let (pattern, opts) = match v {
                    Bson::String(s) => (s.clone(), opts),
                    Bson::RegularExpression(r) if opts.is_empty() => {
                        (r.pattern.clone(), r.options.clone())
                    }
                    Bson::RegularExpression(_) => {
                        return Err(bad("options set in both $regex and $options"))
                    }
                    _ => return Err(bad("$regex has to be a string")),
                };
                let re = build_regex(&pattern, &opts)?;
                let orig = Bson::RegularExpression(bson::Regex {
                    pattern,
                    options: opts,
                });
                Pred::Regex(re, orig)
            }
            "$options" => {
                if !d.contains_key("$regex") {
                    return Err(bad("$options needs a $regex"));
                }
                continue;
            }
            "$size" => match as_int(v) {
                Some(n) if n >= 0 => Pred::Size(n),
                Some(_) => return Err(bad("$size may not be negative")),
                None => {
                    return Err(bad(format!(
                        "Failed to parse $size. Expected a number in: $size: {v}"
                    )))
                }
            },
            "$all" => {
                let Bson::Array(a) = v else {
                    return Err(bad("$all needs an array"));
                };
                let mut all = Vec::new();
                for x in a {
                    all.push(match x {
                        Bson::Document(d)
                            if d.keys().next().map(String::as_str) == Some("$elemMatch") =>
                        {
                            parse_ops(d)?
                        }
                        Bson::Document(d) if is_operator_doc(d) => {
                            return Err(bad("no $ expressions in $all"))
                        }
                        _ => parse_value(x)?,
                    });
                }
                Pred::All(all)
            }
            "$elemMatch" => {
                let Bson::Document(e) = v else {
                    return Err(bad("$elemMatch needs an Object"));
                };
                let value_form = e.keys().all(|k| {
                    k.starts_with('$') && !matches!(k.as_str(), "$and" | "$or" | "$nor" | "$expr")
                }) && !e.is_empty();
                if value_form {
                    Pred::ElemValue(parse_ops(e)?)
                } else {
                    Pred::ElemDoc(Box::new(parse(e)?))
                }
            }
            "$mod" => {
                let Bson::Array(a) = v else {
                    return Err(bad("malformed mod, needs to be an array"));
                };
                if a.len() < 2 {
                    return Err(bad("malformed mod, not enough elements"));
                }
                if a.len() > 2 {
                    return Err(bad("malformed mod, too many elements"));
                }
                let (Some(dv), Some(rv)) = (num_trunc(&a[0]), num_trunc(&a[1])) else {
                    return Err(bad("malformed mod, divisor and remainder must be numbers"));
                };
                if dv == 0 {
                    return Err(bad("divisor cannot be 0"));
                }
                Pred::Mod(dv, rv)
            }
            "$not" => match v {
                Bson::RegularExpression(r) => Pred::Not(vec![Pred::Regex(
                    build_regex(&r.pattern, &r.options)?,
                    v.clone(),
                )]),
                Bson::Document(nd) => {
                    if nd.is_empty() {
                        return Err(bad("$not cannot be empty"));
                    }
                    if !is_operator_doc(nd) {
                        return Err(bad("$not needs a regex or a document"));
                    }
                    Pred::Not(parse_ops(nd)?)
                }
                _ => return Err(bad("$not needs a regex or a document")),
            },
            "$near" | "$nearSphere" | "$geoWithin" | "$geoIntersects" | "$within"
            | "$bitsAllSet" | "$bitsAllClear" | "$bitsAnySet" | "$bitsAnyClear" => {
                return Err(bad(format!("{k} is not supported by the emulator")))
            }
            _ => return Err(bad(format!("unknown operator: {k}"))),
        };
        preds.push(p);
    }
    Ok(preds)
}

fn num_trunc(v: &Bson) -> Option<i64> {
    match as_num(v)? {
        super::compare::Num::Int(i) => Some(i),
        super::compare::Num::Float(f) if f.is_finite() => Some(f.trunc() as i64),
        super::compare::Num::Float(_) => None,
    }
}

fn parse_types(v: &Bson) -> Result<Vec<Option<i32>>, QueryError> {
    let one = |x: &Bson| -> Result<Option<i32>, QueryError> {
        match x {
            Bson::String(s) => {
                alias_number(s).ok_or_else(|| bad(format!("Unknown type name alias: {s}")))
            }
            _ => match as_num(x) {
                Some(_) => {
                    let n = num_trunc(x).unwrap_or(0);
                    if !valid_type_number(n) {
                        return Err(bad(format!("Invalid numerical type code: {x}")));
                    }
                    Ok(Some(n as i32))
                }
                None => Err(bad("type must be represented as a number or a string")),
            },
        }
    };
    match v {
        Bson::Array(a) => a.iter().map(one).collect(),
        _ => Ok(vec![one(v)?]),
    }
}

/// Evaluate a parsed filter against a document.
pub fn eval(node: &Node, doc: &Document) -> Result<bool, QueryError> {
    Ok(match node {
        Node::And(ns) => {
            for n in ns {
                if !eval(n, doc)? {
                    return Ok(false);
                }
            }
            true
        }
        Node::Or(ns) => {
            for n in ns {
                if eval(n, doc)? {
                    return Ok(true);
                }
            }
            false
        }
        Node::Nor(ns) => {
            for n in ns {
                if eval(n, doc)? {
                    return Ok(false);
                }
            }
            true
        }
        Node::Const(b) => *b,
        Node::Expr(e) => expr::truthy(expr::eval_opt(e, doc)?.as_ref()),
        Node::Path(path, preds) => {
            let vals = lookup(doc, path);
            for p in preds {
                if !pred_holds(p, &vals)? {
                    return Ok(false);
                }
            }
            true
        }
    })
}

/// Whether `test` holds for a candidate: the value itself, or (for arrays) any element;
/// `missing` answers for an absent value.
fn any_leaf(vals: &[Option<&Bson>], missing: bool, test: &dyn Fn(&Bson) -> bool) -> bool {
    vals.iter().any(|v| match v {
        None => missing,
        Some(x) => test(x) || matches!(x, Bson::Array(a) if a.iter().any(test)),
    })
}

fn eq_test(x: &Bson) -> impl Fn(&Bson) -> bool + '_ {
    move |v: &Bson| match x {
        Bson::Null => matches!(v, Bson::Null | Bson::Undefined),
        _ => canonical_type(v) == canonical_type(x) && values_equal(v, x),
    }
}

fn item_test(items: &[Item]) -> impl Fn(&Bson) -> bool + '_ {
    move |v: &Bson| {
        items.iter().any(|it| match it {
            Item::Value(x) => eq_test(x)(v),
            Item::Pattern(re, orig) => regex_test(re, orig, v),
        })
    }
}

fn regex_test(re: &Regex, orig: &Bson, v: &Bson) -> bool {
    match v {
        Bson::String(s) | Bson::Symbol(s) => re.is_match(s),
        Bson::RegularExpression(_) => values_equal(v, orig),
        _ => false,
    }
}

fn pred_holds(p: &Pred, vals: &[Option<&Bson>]) -> Result<bool, QueryError> {
    Ok(match p {
        Pred::Eq(x) => any_leaf(vals, matches!(x, Bson::Null), &eq_test(x)),
        Pred::Ne(x) => !any_leaf(vals, matches!(x, Bson::Null), &eq_test(x)),
        Pred::In(items) => any_leaf(vals, has_null(items), &item_test(items)),
        Pred::Nin(items) => !any_leaf(vals, has_null(items), &item_test(items)),
        Pred::Cmp(op, x) => {
            let missing = matches!(x, Bson::Null) && matches!(op, CmpOp::Gte | CmpOp::Lte);
            let op = *op;
            any_leaf(vals, missing, &move |v: &Bson| {
                let cross = matches!(x, Bson::MinKey | Bson::MaxKey);
                if !cross && canonical_type(v) != canonical_type(x) {
                    return false;
                }
                let o = compare(v, x);
                match op {
                    CmpOp::Gt => o == Ordering::Greater,
                    CmpOp::Gte => o != Ordering::Less,
                    CmpOp::Lt => o == Ordering::Less,
                    CmpOp::Lte => o != Ordering::Greater,
                }
            })
        }
        Pred::Exists(b) => vals.iter().any(Option::is_some) == *b,
        Pred::Type(ts) => any_leaf(vals, false, &|v: &Bson| {
            ts.iter().any(|t| match t {
                None => as_num(v).is_some(),
                Some(n) => type_number(v) == *n,
            })
        }),
        Pred::Regex(re, orig) => any_leaf(vals, false, &|v: &Bson| regex_test(re, orig, v)),
        Pred::Size(n) => vals
            .iter()
            .any(|v| matches!(v, Some(Bson::Array(a)) if a.len() as i64 == *n)),
        Pred::All(entries) => {
            if entries.is_empty() {
                return Ok(false);
            }
            for e in entries {
                for q in e {
                    if !pred_holds(q, vals)? {
                        return Ok(false);
                    }
                }
            }
            true
        }
        Pred::ElemValue(preds) => {
            for v in vals {
                if let Some(Bson::Array(a)) = v {
                    for el in a {
                        let one = [Some(el)];
                        let mut ok = true;
                        for q in preds {
                            if !pred_holds(q, &one)? {
                                ok = false;
                                break;
                            }
                        }
                        if ok {
                            return Ok(true);
                        }
                    }
                }
            }
            false
        }
        Pred::ElemDoc(node) => {
            for v in vals {
                if let Some(Bson::Array(a)) = v {
                    for el in a {
                        if let Bson::Document(d) = el {
                            if eval(node, d)? {
                                return Ok(true);
                            }
                        }
                    }
                }
            }
            false
        }
        Pred::Mod(d, r) => any_leaf(vals, false, &|v: &Bson| match num_trunc(v) {
            Some(n) if as_num(v).is_some() => n.wrapping_rem(*d) == *r,
            _ => false,
        }),
        Pred::Not(preds) => {
            for q in preds {
                if !pred_holds(q, vals)? {
                    return Ok(true);
                }
            }
            false
        }
    })
}

fn has_null(items: &[Item]) -> bool {
    items.iter().any(|i| matches!(i, Item::Value(Bson::Null)))
}

#[cfg(test)]
#[path = "matcher_tests.rs"]
mod tests;
