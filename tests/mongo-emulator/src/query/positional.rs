//! The all-positional `$[]` and filtered-positional `$[<identifier>]` update paths with
//! `arrayFilters`: before an operator update is applied to a document, each such path
//! becomes the concrete paths (`a.0.b`, `a.2.b`) of the array elements it designates in
//! that document. (The first-match `$` operator is not supported.)

use bson::{doc, Bson, Document};

use super::QueryError;

fn failed(msg: String) -> QueryError {
    QueryError::new(9, "FailedToParse", msg)
}

/// The identifier of each array filter (`{x: …}` or `{"x.f": …}`: all keys share one).
pub fn filter_ids(filters: &[Document]) -> Result<Vec<String>, QueryError> {
    filters
        .iter()
        .map(|f| {
            let mut ids = f.keys().map(|k| k.split('.').next().unwrap_or(""));
            let id = ids.next().ok_or_else(|| {
                failed("Cannot use an expression without a top-level field name in arrayFilters".into())
            })?;
            if ids.any(|other| other != id) {
                return Err(failed(format!(
                    "Error parsing array filter :: caused by :: Expected a single top-level field name, found '{id}' and another"
                )));
            }
            Ok(id.to_string())
        })
        .collect()
}

/// Whether `update` (an operator document) uses positional paths.
pub fn uses_positional(update: &Document) -> bool {
    update.values().any(|fields| match fields {
        Bson::Document(f) => f.keys().any(|p| p.contains("$[")),
        _ => false,
    })
}

/// `update` with its positional paths made concrete for `doc` (empty when no element
/// matched: a no-op). Every filter must be used by some path, and every identifier must
/// have a filter (else 9 FailedToParse, as MongoDB).
pub fn expand(
    update: &Document,
    doc: &Document,
    filters: &[Document],
) -> Result<Document, QueryError> {
    let ids = filter_ids(filters)?;
    let mut used = vec![false; ids.len()];
    let mut out = Document::new();
    for (op, fields) in update {
        let Bson::Document(fields) = fields else {
            out.insert(op.clone(), fields.clone());
            continue;
        };
        let mut concrete = Document::new();
        for (path, v) in fields {
            if !path.contains("$[") {
                concrete.insert(path.clone(), v.clone());
                continue;
            }
            let parts: Vec<&str> = path.split('.').collect();
            let mut paths = Vec::new();
            walk(
                Some(&Bson::Document(doc.clone())),
                &parts,
                String::new(),
                &ids,
                filters,
                &mut used,
                &mut paths,
            )?;
            for p in paths {
                concrete.insert(p, v.clone());
            }
        }
        // An operator left without paths (no element matched) does nothing.
        if !concrete.is_empty() {
            out.insert(op.clone(), concrete);
        }
    }
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(failed(format!(
            "The array filter for identifier '{}' was not used in the update {update}",
            ids[i]
        )));
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn walk(
    at: Option<&Bson>,
    parts: &[&str],
    prefix: String,
    ids: &[String],
    filters: &[Document],
    used: &mut [bool],
    out: &mut Vec<String>,
) -> Result<(), QueryError> {
    let Some((first, rest)) = parts.split_first() else {
        out.push(prefix);
        return Ok(());
    };
    let join = |p: &str| {
        if prefix.is_empty() {
            p.to_string()
        } else {
            format!("{prefix}.{p}")
        }
    };
    if let Some(inner) = first.strip_prefix("$[").and_then(|s| s.strip_suffix(']')) {
        let filter = if inner.is_empty() {
            None
        } else {
            let i = ids.iter().position(|id| id == inner).ok_or_else(|| {
                failed(format!(
                    "No array filter found for identifier '{inner}' in path '{}'",
                    parts.join(".")
                ))
            })?;
            used[i] = true;
            Some((inner, &filters[i]))
        };
        let Some(Bson::Array(items)) = at else {
            // Nothing to expand over (MongoDB errors on a non-array; a missing path
            // simply matches no element).
            return match at {
                None | Some(Bson::Null) => Ok(()),
                Some(_) => Err(QueryError::bad_value(format!(
                    "Cannot apply array updates to non-array element {}",
                    prefix
                ))),
            };
        };
        for (i, item) in items.iter().enumerate() {
            if let Some((id, f)) = filter {
                if !element_matches(item, id, f)? {
                    continue;
                }
            }
            walk(
                Some(item),
                rest,
                join(&i.to_string()),
                ids,
                filters,
                used,
                out,
            )?;
        }
        return Ok(());
    }
    if first.starts_with('$') {
        return Err(QueryError::bad_value(format!(
            "the positional operator '{first}' is not supported by the emulator"
        )));
    }
    let next = match at {
        Some(Bson::Document(d)) => d.get(*first),
        Some(Bson::Array(a)) => first.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    };
    walk(next, rest, join(first), ids, filters, used, out)
}

/// Whether array element `item` passes the filter of identifier `id`.
fn element_matches(item: &Bson, id: &str, filter: &Document) -> Result<bool, QueryError> {
    let mut f = Document::new();
    for (k, v) in filter {
        let rest = &k[id.len()..];
        f.insert(format!("e{rest}"), v.clone());
    }
    super::matches(&doc! {"e": item.clone()}, &f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filtered_and_all_positional_paths_become_concrete() {
        let d = doc! {"_id": 1, "y": [{"b": 3}, {"b": 1}, {"b": 2}], "z": [1, 2]};
        let u = doc! {"$set": {"y.$[i].b": 2, "z.$[]": 0}};
        let out = expand(&u, &d, &[doc! {"i.b": 3}]).unwrap();
        assert_eq!(out, doc! {"$set": {"y.0.b": 2, "z.0": 0, "z.1": 0}});
        let e = expand(&doc! {"$set": {"z.$[]": 0}}, &d, &[doc! {"i": 1}]).unwrap_err();
        assert_eq!(e.code, 9, "an unused filter");
        let e = expand(&doc! {"$set": {"z.$[k]": 0}}, &d, &[]).unwrap_err();
        assert_eq!(e.code, 9, "an identifier without a filter");
    }
}
