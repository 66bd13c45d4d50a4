//! Update statements: replacement documents, update-operator documents (`$set`, `$inc`,
//! `$push`…) and pipeline updates. Operators are validated up front (unknown modifier,
//! empty operand, conflicting paths) and then applied field by field in MongoDB's order
//! (lexicographic by path, numeric components numerically), so new fields append in
//! that order and existing fields keep their position.

use std::cmp::Ordering;

use bson::{Bson, DateTime, Document, Timestamp};

use super::arith::{self, is_number, zero_like};
use super::compare::{compare, values_equal};
use super::fieldpath::{self, describe};
use super::path::is_index;
use super::{matcher, run_pipeline, sort, QueryError, UpdateSpec};

const OPERATORS: &[&str] = &[
    "$set",
    "$unset",
    "$inc",
    "$mul",
    "$min",
    "$max",
    "$rename",
    "$setOnInsert",
    "$push",
    "$addToSet",
    "$pull",
    "$pullAll",
    "$pop",
    "$currentDate",
];

/// One `operator: {path: argument}` entry.
struct Entry {
    /// The operator, e.g. `$set`.
    op: String,
    /// The dotted path it targets.
    path: String,
    /// Its argument.
    arg: Bson,
}

fn failed_to_parse(msg: impl Into<String>) -> QueryError {
    QueryError::new(9, "FailedToParse", msg)
}

fn type_mismatch(msg: impl Into<String>) -> QueryError {
    QueryError::new(14, "TypeMismatch", msg)
}

fn immutable_id() -> QueryError {
    QueryError::new(
        66,
        "ImmutableField",
        "Performing an update on the path '_id' would modify the immutable field '_id'",
    )
}

fn id_altered(id: &Bson) -> QueryError {
    QueryError::new(
        66,
        "ImmutableField",
        format!("After applying the update, the (immutable) field '_id' was found to have been altered to _id: {id}"),
    )
}

/// See [`super::apply_update`].
pub fn apply(
    doc: &Document,
    spec: &UpdateSpec,
    upsert_insert: bool,
) -> Result<Document, QueryError> {
    match spec {
        UpdateSpec::Replacement(r) => replace(doc, r),
        UpdateSpec::Operators(ops) => operators(doc, ops, upsert_insert),
        UpdateSpec::Pipeline(stages) => pipeline(doc, stages),
    }
}

/// [`apply`], consuming the spec: a replacement is used as it is, not cloned.
pub fn apply_owned(
    doc: &Document,
    spec: UpdateSpec,
    upsert_insert: bool,
) -> Result<Document, QueryError> {
    match spec {
        UpdateSpec::Replacement(r) => with_kept_id(doc, r),
        other => apply(doc, &other, upsert_insert),
    }
}

/// Put `_id` first, keeping every other field in place.
pub fn id_first(d: Document) -> Document {
    match d.keys().next() {
        Some(k) if k == "_id" => d,
        _ => match d.get("_id") {
            None => d,
            Some(id) => {
                let mut out = Document::new();
                out.insert("_id", id.clone());
                out.extend(d.into_iter().filter(|(k, _)| k != "_id"));
                out
            }
        },
    }
}

fn with_kept_id(doc: &Document, new: Document) -> Result<Document, QueryError> {
    match (doc.get("_id"), new.get("_id")) {
        (Some(old), Some(n)) if old != n => Err(id_altered(n)),
        (Some(old), None) => {
            let mut out = Document::new();
            out.insert("_id", old.clone());
            out.extend(new);
            Ok(out)
        }
        _ => Ok(id_first(new)),
    }
}

fn replace(doc: &Document, r: &Document) -> Result<Document, QueryError> {
    with_kept_id(doc, r.clone())
}

/// Check an update before any document is touched (MongoDB rejects a malformed update
/// even when it matches nothing).
pub fn validate(spec: &UpdateSpec) -> Result<(), QueryError> {
    match spec {
        UpdateSpec::Replacement(_) => Ok(()),
        UpdateSpec::Operators(ops) => check_conflicts(&parse_entries(ops)?),
        UpdateSpec::Pipeline(stages) => check_stages(stages),
    }
}

fn check_stages(stages: &[Document]) -> Result<(), QueryError> {
    for st in stages {
        let name = st.keys().next().map(String::as_str).unwrap_or("");
        if !matches!(
            name,
            "$addFields" | "$set" | "$project" | "$unset" | "$replaceRoot" | "$replaceWith"
        ) {
            return Err(QueryError::new(
                72,
                "InvalidOptions",
                format!("{name} is not allowed to be used within an update"),
            ));
        }
    }
    Ok(())
}

fn pipeline(doc: &Document, stages: &[Document]) -> Result<Document, QueryError> {
    check_stages(stages)?;
    let out = run_pipeline(vec![doc.clone()], stages)?
        .into_iter()
        .next()
        .unwrap_or_default();
    with_kept_id(doc, out)
}

fn parse_entries(ops: &Document) -> Result<Vec<Entry>, QueryError> {
    let mut entries = Vec::new();
    for (op, arg) in ops {
        if !OPERATORS.contains(&op.as_str()) {
            if op == "$bit" {
                return Err(QueryError::bad_value(
                    "$bit is not supported by the emulator",
                ));
            }
            return Err(failed_to_parse(format!(
                "Unknown modifier: {op}. Expected a valid update modifier or pipeline-style update specified as an array"
            )));
        }
        let Bson::Document(fields) = arg else {
            return Err(failed_to_parse(format!(
                "Modifiers operate on fields but we found type {} instead. For example: {{$mod: {{<field>: ...}}}} not {{{op}: {arg}}}",
                describe(arg)
            )));
        };
        if fields.is_empty() {
            return Err(failed_to_parse(format!(
                "'{op}' is empty. You must specify a field like so: {{{op}: {{<field>: ...}}}}"
            )));
        }
        for (path, v) in fields {
            check_path(path)?;
            if op == "$rename" {
                let Bson::String(to) = v else {
                    return Err(QueryError::bad_value(format!(
                        "The 'to' field for $rename must be a string: {path}: {v}"
                    )));
                };
                if to == path {
                    return Err(QueryError::bad_value(format!(
                        "The source and target field for $rename must differ: {path}: \"{to}\""
                    )));
                }
                check_path(to)?;
            }
            entries.push(Entry {
                op: op.clone(),
                path: path.clone(),
                arg: v.clone(),
            });
        }
    }
    Ok(entries)
}

fn check_path(path: &str) -> Result<(), QueryError> {
    if path.split('.').any(str::is_empty) {
        return Err(QueryError::new(
            56,
            "EmptyFieldName",
            format!("An update path '{path}' contains an empty field name, which is not allowed."),
        ));
    }
    // `$[]` / `$[id]` are made concrete per document (`positional::expand`).
    let positional = |p: &str| p.starts_with("$[") && p.ends_with(']');
    if path
        .split('.')
        .any(|p| p.starts_with('$') && !positional(p))
    {
        return Err(QueryError::bad_value(format!(
            "positional and $-prefixed update paths are not supported by the emulator: '{path}'"
        )));
    }
    Ok(())
}

/// Whether `a` is `b` or an ancestor of it.
fn is_prefix(a: &str, b: &str) -> bool {
    a == b || (b.starts_with(a) && b.as_bytes().get(a.len()) == Some(&b'.'))
}

fn check_conflicts(entries: &[Entry]) -> Result<(), QueryError> {
    let mut paths: Vec<&str> = Vec::new();
    for e in entries {
        paths.push(&e.path);
        if e.op == "$rename" {
            if let Bson::String(to) = &e.arg {
                paths.push(to);
            }
        }
    }
    for (i, a) in paths.iter().enumerate() {
        for b in &paths[..i] {
            if is_prefix(b, a) || is_prefix(a, b) {
                let (short, long) = if b.len() <= a.len() { (b, a) } else { (a, b) };
                return Err(QueryError::new(
                    40,
                    "ConflictingUpdateOperators",
                    format!("Updating the path '{long}' would create a conflict at '{short}'"),
                ));
            }
        }
    }
    Ok(())
}

/// MongoDB's field order for applying updates: per component, numbers numerically,
/// otherwise bytewise.
fn path_order(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.split('.'), b.split('.'));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => {
                let o = match (is_index(p), is_index(q)) {
                    (true, true) => p.len().cmp(&q.len()).then_with(|| p.cmp(q)),
                    _ => p.cmp(q),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

fn operators(doc: &Document, ops: &Document, upsert_insert: bool) -> Result<Document, QueryError> {
    let mut entries = parse_entries(ops)?;
    check_conflicts(&entries)?;
    entries.sort_by(|a, b| path_order(&a.path, &b.path));
    let mut out = doc.clone();
    for e in &entries {
        apply_entry(&mut out, e, upsert_insert, doc)?;
    }
    if doc.contains_key("_id") && out.get("_id") != doc.get("_id") {
        return Err(immutable_id());
    }
    Ok(id_first(out))
}

fn id_desc(doc: &Document) -> String {
    match doc.get("_id") {
        Some(id) => format!("{{_id: {id}}}"),
        None => "{}".into(),
    }
}

fn apply_entry(
    out: &mut Document,
    e: &Entry,
    upsert_insert: bool,
    orig: &Document,
) -> Result<(), QueryError> {
    let parts: Vec<&str> = e.path.split('.').collect();
    let last = *parts.last().expect("split yields one part");
    let cur = fieldpath::get(out, &parts).cloned();
    match e.op.as_str() {
        "$set" => fieldpath::set(out, &parts, e.arg.clone()),
        "$setOnInsert" if upsert_insert => fieldpath::set(out, &parts, e.arg.clone()),
        "$setOnInsert" => Ok(()),
        "$unset" => {
            fieldpath::remove(out, &parts);
            Ok(())
        }
        "$inc" | "$mul" => {
            let (verb, name) = if e.op == "$inc" {
                ("increment", "$inc")
            } else {
                ("multiply", "$mul")
            };
            if !is_number(&e.arg) {
                return Err(type_mismatch(format!(
                    "Cannot {verb} with non-numeric argument: {{{}: {}}}",
                    e.path, e.arg
                )));
            }
            let new = match &cur {
                None if name == "$inc" => e.arg.clone(),
                None => zero_like(&e.arg),
                Some(c) if is_number(c) => {
                    if name == "$inc" { arith::add(c, &e.arg) } else { arith::mul(c, &e.arg) }.expect("both numeric")
                }
                Some(c) => {
                    return Err(type_mismatch(format!(
                        "Cannot apply {name} to a value of non-numeric type. {} has the field '{last}' of non-numeric type {}",
                        id_desc(orig),
                        describe(c)
                    )))
                }
            };
            fieldpath::set(out, &parts, new)
        }
        "$min" | "$max" => {
            let want = if e.op == "$min" {
                Ordering::Less
            } else {
                Ordering::Greater
            };
            match &cur {
                Some(c) if compare(&e.arg, c) != want => Ok(()),
                _ => fieldpath::set(out, &parts, e.arg.clone()),
            }
        }
        "$rename" => {
            let Bson::String(to) = &e.arg else {
                unreachable!("checked in parse_entries")
            };
            match fieldpath::remove(out, &parts) {
                Some(v) => fieldpath::set(out, &to.split('.').collect::<Vec<_>>(), v),
                None => Ok(()),
            }
        }
        "$currentDate" => {
            let now = DateTime::now();
            let v = match &e.arg {
                Bson::Boolean(_) => Bson::DateTime(now),
                Bson::Document(d) if d.get_str("$type") == Ok("date") => Bson::DateTime(now),
                Bson::Document(d) if d.get_str("$type") == Ok("timestamp") => Bson::Timestamp(Timestamp {
                    time: u32::try_from(now.timestamp_millis() / 1000).unwrap_or(u32::MAX),
                    increment: 1,
                }),
                _ => {
                    return Err(QueryError::bad_value(format!(
                        "{} is not valid type for $currentDate. Please use a boolean ('true') or a $type expression ({{$type: 'timestamp/date'}}).",
                        describe(&e.arg)
                    )))
                }
            };
            fieldpath::set(out, &parts, v)
        }
        _ => array_op(out, e, &parts, cur, orig),
    }
}

fn must_be_array(last: &str, c: &Bson, orig: &Document) -> QueryError {
    QueryError::bad_value(format!(
        "The field '{last}' must be an array but is of type {} in document {}",
        describe(c),
        id_desc(orig)
    ))
}

fn array_op(
    out: &mut Document,
    e: &Entry,
    parts: &[&str],
    cur: Option<Bson>,
    orig: &Document,
) -> Result<(), QueryError> {
    let last = *parts.last().expect("non-empty");
    let existing = match &cur {
        None => None,
        Some(Bson::Array(a)) => Some(a.clone()),
        Some(c) => {
            return Err(match e.op.as_str() {
                "$pull" | "$pullAll" => {
                    QueryError::bad_value("Cannot apply $pull to a non-array value")
                }
                "$pop" => type_mismatch(format!(
                    "Path '{}' contains an element of non-array type '{}'",
                    e.path,
                    describe(c)
                )),
                _ => must_be_array(last, c, orig),
            })
        }
    };
    let new = match e.op.as_str() {
        "$push" => push(existing.unwrap_or_default(), &e.arg)?,
        "$addToSet" => {
            let mut arr = existing.unwrap_or_default();
            for v in each_values(&e.arg, "$addToSet")? {
                if !arr.iter().any(|x| values_equal(x, &v)) {
                    arr.push(v);
                }
            }
            arr
        }
        "$pop" => {
            let dir = match &e.arg {
                v if is_number(v) && (arith::to_f64(v) == 1.0 || arith::to_f64(v) == -1.0) => {
                    arith::to_f64(v)
                }
                v => return Err(failed_to_parse(format!("$pop expects 1 or -1, found: {v}"))),
            };
            let Some(mut arr) = existing else {
                return Ok(());
            };
            if dir > 0.0 {
                arr.pop();
            } else if !arr.is_empty() {
                arr.remove(0);
            }
            arr
        }
        "$pullAll" => {
            let Bson::Array(vals) = &e.arg else {
                return Err(QueryError::bad_value(format!(
                    "$pullAll requires an array argument but was given a {}",
                    describe(&e.arg)
                )));
            };
            let Some(arr) = existing else { return Ok(()) };
            arr.into_iter()
                .filter(|x| !vals.iter().any(|v| values_equal(x, v)))
                .collect()
        }
        _ => {
            let Some(arr) = existing else { return Ok(()) };
            let mut kept = Vec::with_capacity(arr.len());
            for x in arr {
                if !pull_matches(&e.arg, &x)? {
                    kept.push(x);
                }
            }
            kept
        }
    };
    fieldpath::set(out, parts, Bson::Array(new))
}

fn pull_matches(cond: &Bson, el: &Bson) -> Result<bool, QueryError> {
    match cond {
        Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => {
            let mut wrapper = Document::new();
            wrapper.insert("v", el.clone());
            let mut f = Document::new();
            f.insert("v", cond.clone());
            super::matches(&wrapper, &f)
        }
        Bson::Document(d) => match el {
            Bson::Document(x) => super::matches(x, d),
            _ => Ok(false),
        },
        Bson::RegularExpression(r) => {
            let re = matcher::build_regex(&r.pattern, &r.options)?;
            Ok(matches!(el, Bson::String(s) if re.is_match(s)) || values_equal(el, cond))
        }
        _ => Ok(values_equal(el, cond)),
    }
}

fn each_values(arg: &Bson, op: &str) -> Result<Vec<Bson>, QueryError> {
    match arg {
        Bson::Document(d) if d.keys().next().map(String::as_str) == Some("$each") => {
            match d.get("$each") {
                Some(Bson::Array(a)) => Ok(a.clone()),
                Some(v) => Err(QueryError::bad_value(format!(
                    "The argument to $each in {op} must be an array but it was of type: {}",
                    describe(v)
                ))),
                None => Ok(vec![]),
            }
        }
        other => Ok(vec![other.clone()]),
    }
}

fn int_arg(d: &Document, k: &str) -> Result<Option<i64>, QueryError> {
    match d.get(k) {
        None => Ok(None),
        Some(v) if is_number(v) && arith::to_f64(v).fract() == 0.0 => {
            Ok(Some(arith::to_f64(v) as i64))
        }
        Some(v) => Err(QueryError::bad_value(format!(
            "The value for {k} must be an integer value but was given type: {}",
            describe(v)
        ))),
    }
}

fn push(mut arr: Vec<Bson>, arg: &Bson) -> Result<Vec<Bson>, QueryError> {
    let values = each_values(arg, "$push")?;
    let Bson::Document(d) = arg else {
        arr.extend(values);
        return Ok(arr);
    };
    if d.keys().next().map(String::as_str) != Some("$each") {
        arr.extend(values);
        return Ok(arr);
    }
    if let Some(k) = d
        .keys()
        .find(|k| !matches!(k.as_str(), "$each" | "$slice" | "$position" | "$sort"))
    {
        return Err(QueryError::bad_value(format!(
            "Unrecognized clause in $push: {k}"
        )));
    }
    let pos = match int_arg(d, "$position")? {
        None => arr.len(),
        Some(p) if p < 0 => arr.len().saturating_sub(p.unsigned_abs() as usize),
        Some(p) => (p as usize).min(arr.len()),
    };
    arr.splice(pos..pos, values);
    if let Some(spec) = d.get("$sort") {
        sort::sort_values(&mut arr, spec)?;
    }
    if let Some(n) = int_arg(d, "$slice")? {
        let len = arr.len();
        if n >= 0 {
            arr.truncate(n as usize);
        } else {
            arr.drain(..len.saturating_sub(n.unsigned_abs() as usize));
        }
    }
    Ok(arr)
}

#[cfg(test)]
#[path = "update_tests.rs"]
mod tests;
