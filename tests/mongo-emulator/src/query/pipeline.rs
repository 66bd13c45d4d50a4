//! Aggregation stages over an in-memory list of documents: `$match $project
//! $addFields/$set $unset $sort $skip $limit $count $group $replaceRoot $replaceWith
//! $unwind`. Stages that need other collections or server state are refused.

use bson::{Bson, Document};

use super::arith::{is_number, to_f64};
use super::compare::values_equal;
use super::expr::{self, eval_opt, reduce};
use super::{matcher, projection, sort, QueryError};

fn loc(code: i32, msg: impl Into<String>) -> QueryError {
    let name = match code {
        15955 => "Location15955",
        15952 => "Location15952",
        40234 => "Location40234",
        40235 => "Location40235",
        40228 => "Location40228",
        40323 => "Location40323",
        40324 => "Location40324",
        15956 => "Location15956",
        15958 => "Location15958",
        15976 => "Location15976",
        40156 => "Location40156",
        40157 => "Location40157",
        40158 => "Location40158",
        28812 => "Location28812",
        _ => "Location",
    };
    QueryError::new(code, name, msg)
}

/// See [`super::run_pipeline`].
pub fn run(mut docs: Vec<Document>, stages: &[Document]) -> Result<Vec<Document>, QueryError> {
    for st in stages {
        if st.len() != 1 {
            return Err(loc(
                40323,
                "A pipeline stage specification object must contain exactly one field.",
            ));
        }
        let (name, arg) = st.iter().next().expect("one field");
        docs = stage(docs, name, arg)?;
    }
    Ok(docs)
}

fn count_arg(name: &str, v: &Bson) -> Result<usize, QueryError> {
    match v {
        v if is_number(v) && to_f64(v) >= 0.0 && to_f64(v).fract() == 0.0 => Ok(to_f64(v) as usize),
        _ => Err(loc(
            if name == "$skip" { 15956 } else { 15958 },
            format!(
                "invalid argument to {name} stage: Expected a non-negative number in: {name}: {v}"
            ),
        )),
    }
}

fn stage(docs: Vec<Document>, name: &str, arg: &Bson) -> Result<Vec<Document>, QueryError> {
    let need_doc = || match arg {
        Bson::Document(d) => Ok(d),
        _ => Err(QueryError::new(
            15990,
            "Location15990",
            format!("{name} specification must be an object"),
        )),
    };
    Ok(match name {
        "$match" => {
            let node = matcher::parse(need_doc()?)?;
            let mut out = Vec::new();
            for d in docs {
                if matcher::eval(&node, &d)? {
                    out.push(d);
                }
            }
            out
        }
        "$project" => {
            let spec = need_doc()?;
            if spec.is_empty() {
                return Err(QueryError::new(
                    51272,
                    "Location51272",
                    "$project requires at least one output field",
                ));
            }
            let p = projection::Projection::parse(spec)?;
            docs.iter().map(|d| p.apply(d)).collect::<Result<_, _>>()?
        }
        "$unset" => {
            let fields: Vec<String> = match arg {
                Bson::String(s) => vec![s.clone()],
                Bson::Array(a) if !a.is_empty() && a.iter().all(|x| matches!(x, Bson::String(_))) => {
                    a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()
                }
                _ => return Err(QueryError::new(31002, "Location31002", "$unset specification must be a string or an array containing only string values")),
            };
            let mut spec = Document::new();
            for f in fields {
                spec.insert(f, 0);
            }
            let p = projection::Projection::parse(&spec)?;
            docs.iter().map(|d| p.apply(d)).collect::<Result<_, _>>()?
        }
        "$addFields" | "$set" => {
            let spec = need_doc()?;
            spec.values().try_for_each(expr::validate)?;
            docs.into_iter()
                .map(|d| add_fields(d, spec))
                .collect::<Result<_, _>>()?
        }
        "$sort" => {
            let spec = need_doc()?;
            if spec.is_empty() {
                return Err(loc(15976, "$sort stage must have at least one sort key"));
            }
            let mut docs = docs;
            sort::sort_documents(&mut docs, spec)?;
            docs
        }
        "$skip" => docs.into_iter().skip(count_arg(name, arg)?).collect(),
        "$limit" => match count_arg(name, arg)? {
            0 => return Err(loc(15958, "the limit must be positive")),
            n => docs.into_iter().take(n).collect(),
        },
        "$count" => {
            let Bson::String(field) = arg else {
                return Err(loc(40156, "the count field must be a non-empty string"));
            };
            if field.is_empty() {
                return Err(loc(40157, "the count field must be a non-empty string"));
            }
            if field.starts_with('$') || field.contains('.') {
                return Err(loc(
                    40158,
                    "the count field cannot be a $-prefixed path or contain a '.'",
                ));
            }
            if docs.is_empty() {
                return Ok(vec![]);
            }
            let mut d = Document::new();
            let n = docs.len();
            d.insert(
                field.clone(),
                i32::try_from(n)
                    .map(Bson::Int32)
                    .unwrap_or(Bson::Int64(n as i64)),
            );
            vec![d]
        }
        "$group" => group(docs, need_doc()?)?,
        "$replaceRoot" | "$replaceWith" => {
            let e = if name == "$replaceRoot" {
                need_doc()?.get("newRoot").ok_or_else(|| {
                    QueryError::new(
                        40231,
                        "Location40231",
                        "no newRoot specified for the $replaceRoot stage",
                    )
                })?
            } else {
                arg
            };
            expr::validate(e)?;
            let mut out = Vec::with_capacity(docs.len());
            for d in &docs {
                match eval_opt(e, d)? {
                    Some(Bson::Document(n)) => out.push(n),
                    v => {
                        return Err(loc(40228, format!(
                            "'replacement document' must evaluate to an object, but resulting value was: {}. Type of resulting value: '{}'. Input document: {d}",
                            v.as_ref().map(|x| x.to_string()).unwrap_or_else(|| "MISSING".into()),
                            v.as_ref().map(super::types::type_name).unwrap_or("missing")
                        )))
                    }
                }
            }
            out
        }
        "$unwind" => unwind(docs, arg)?,
        "$sortByCount" => {
            expr::validate(arg)?;
            let mut g = Document::new();
            g.insert("_id", arg.clone());
            g.insert("count", bson::doc! {"$sum": 1});
            let mut out = group(docs, &g)?;
            sort::sort_documents(&mut out, &bson::doc! {"count": -1})?;
            out
        }
        "$lookup" | "$graphLookup" | "$facet" | "$bucket" | "$bucketAuto" | "$sample" | "$out"
        | "$merge" | "$unionWith" | "$geoNear" | "$search" | "$densify" | "$fill"
        | "$setWindowFields" | "$redact" | "$indexStats" | "$collStats" | "$currentOp"
        | "$listSessions" | "$planCacheStats" | "$documents" | "$changeStream" => {
            return Err(QueryError::bad_value(format!(
                "pipeline stage {name} is not supported by the emulator"
            )))
        }
        _ => {
            return Err(loc(
                40324,
                format!("Unrecognized pipeline stage name: '{name}'"),
            ))
        }
    })
}

/// `$addFields`: evaluate against the input document; nested literal objects merge into
/// existing sub-documents; a missing result removes the field.
fn add_fields(d: Document, spec: &Document) -> Result<Document, QueryError> {
    let root = d.clone();
    let mut out = d;
    for (k, e) in spec {
        let parts: Vec<&str> = k.split('.').collect();
        set_computed(&mut out, &parts, e, &root)?;
    }
    Ok(out)
}

fn set_computed(
    target: &mut Document,
    parts: &[&str],
    e: &Bson,
    root: &Document,
) -> Result<(), QueryError> {
    let (first, rest) = parts.split_first().expect("non-empty path");
    if !rest.is_empty() {
        if !matches!(target.get(*first), Some(Bson::Document(_))) {
            target.insert(*first, Document::new());
        }
        let Some(Bson::Document(sub)) = target.get_mut(*first) else {
            unreachable!("inserted above")
        };
        return set_computed(sub, rest, e, root);
    }
    if let Bson::Document(spec) = e {
        let literal_obj =
            !spec.is_empty() && !spec.keys().next().is_some_and(|k| k.starts_with('$'));
        if literal_obj {
            if let Some(Bson::Document(sub)) = target.get_mut(*first) {
                for (k, v) in spec {
                    set_computed(sub, &[k.as_str()], v, root)?;
                }
                return Ok(());
            }
        }
    }
    match eval_opt(e, root)? {
        Some(v) => {
            target.insert(*first, v);
        }
        None => {
            target.remove(*first);
        }
    }
    Ok(())
}

/// Per-group accumulator state: the values each accumulator has seen.
struct Group {
    /// The group key.
    key: Bson,
    /// Collected values per output field, in spec order.
    values: Vec<Vec<Bson>>,
    /// Whether `$first` has been captured per field.
    seen: Vec<bool>,
}

fn group(docs: Vec<Document>, spec: &Document) -> Result<Vec<Document>, QueryError> {
    let id_expr = spec
        .get("_id")
        .ok_or_else(|| loc(15955, "a group specification must include an _id"))?;
    let mut accs: Vec<(String, String, Bson)> = Vec::new();
    for (k, v) in spec {
        if k == "_id" {
            continue;
        }
        if k.contains('.') {
            return Err(loc(
                40235,
                format!("The field name '{k}' cannot contain '.'"),
            ));
        }
        let Bson::Document(a) = v else {
            return Err(loc(
                40234,
                format!("The field '{k}' must be an accumulator object"),
            ));
        };
        if a.len() != 1 {
            return Err(loc(
                40238,
                format!("The field '{k}' must specify one accumulator"),
            ));
        }
        let (op, e) = a.iter().next().expect("one field");
        if !matches!(
            op.as_str(),
            "$sum"
                | "$avg"
                | "$min"
                | "$max"
                | "$first"
                | "$last"
                | "$push"
                | "$addToSet"
                | "$count"
                | "$mergeObjects"
        ) {
            return Err(loc(15952, format!("unknown group operator '{op}'")));
        }
        expr::validate(e)?;
        accs.push((k.clone(), op.clone(), e.clone()));
    }
    let mut groups: Vec<Group> = Vec::new();
    for d in &docs {
        let key = eval_opt(id_expr, d)?.unwrap_or(Bson::Null);
        let gi = match groups.iter().position(|g| values_equal(&g.key, &key)) {
            Some(i) => i,
            None => {
                groups.push(Group {
                    key,
                    values: vec![Vec::new(); accs.len()],
                    seen: vec![false; accs.len()],
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[gi];
        for (i, (_, op, e)) in accs.iter().enumerate() {
            let v = if op == "$count" {
                Some(Bson::Int32(1))
            } else {
                eval_opt(e, d)?
            };
            match op.as_str() {
                "$first" => {
                    if !g.seen[i] {
                        g.seen[i] = true;
                        g.values[i] = vec![v.unwrap_or(Bson::Null)];
                    }
                }
                "$last" => g.values[i] = vec![v.unwrap_or(Bson::Null)],
                "$addToSet" => {
                    if let Some(v) = v {
                        if !g.values[i].iter().any(|x| values_equal(x, &v)) {
                            g.values[i].push(v);
                        }
                    }
                }
                _ => g.values[i].extend(v),
            }
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let mut d = Document::new();
        d.insert("_id", g.key);
        for ((name, op, _), vals) in accs.iter().zip(g.values) {
            let v = match op.as_str() {
                "$first" | "$last" => vals.into_iter().next().unwrap_or(Bson::Null),
                "$push" | "$addToSet" => Bson::Array(vals),
                "$count" => reduce("$sum", &vals),
                "$mergeObjects" => {
                    let mut m = Document::new();
                    for v in vals {
                        match v {
                            Bson::Document(x) => m.extend(x),
                            Bson::Null => {}
                            other => return Err(QueryError::new(40400, "Location40400", format!("$mergeObjects requires object inputs, but input {other} is of type {}", super::types::type_name(&other)))),
                        }
                    }
                    Bson::Document(m)
                }
                _ => reduce(op, &vals),
            };
            d.insert(name.clone(), v);
        }
        out.push(d);
    }
    Ok(out)
}

fn unwind(docs: Vec<Document>, arg: &Bson) -> Result<Vec<Document>, QueryError> {
    let (path, preserve, index) = match arg {
        Bson::String(p) => (p.clone(), false, None),
        Bson::Document(d) => (
            d.get_str("path")
                .map_err(|_| loc(28812, "no path specified to $unwind stage"))?
                .to_string(),
            d.get_bool("preserveNullAndEmptyArrays").unwrap_or(false),
            d.get_str("includeArrayIndex").ok().map(str::to_string),
        ),
        _ => {
            return Err(QueryError::new(
                15981,
                "Location15981",
                "expected either a string or an object as specification for $unwind stage",
            ))
        }
    };
    let Some(field) = path.strip_prefix('$') else {
        return Err(QueryError::new(
            28818,
            "Location28818",
            "path option to $unwind stage should be prefixed with a '$'",
        ));
    };
    let parts: Vec<&str> = field.split('.').collect();
    let mut out = Vec::new();
    for d in docs {
        match super::fieldpath::get(&d, &parts).cloned() {
            Some(Bson::Array(a)) if !a.is_empty() => {
                for (i, el) in a.into_iter().enumerate() {
                    let mut n = d.clone();
                    super::fieldpath::set(&mut n, &parts, el)?;
                    if let Some(ix) = &index {
                        n.insert(ix.clone(), Bson::Int64(i as i64));
                    }
                    out.push(n);
                }
            }
            Some(Bson::Array(_)) | None | Some(Bson::Null) => {
                if preserve {
                    let mut n = d.clone();
                    if let Some(ix) = &index {
                        n.insert(ix.clone(), Bson::Null);
                    }
                    out.push(n);
                }
            }
            Some(_) => {
                let mut n = d.clone();
                if let Some(ix) = &index {
                    n.insert(ix.clone(), Bson::Null);
                }
                out.push(n);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
