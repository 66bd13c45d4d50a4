//! Sorting by a sort specification with MongoDB's rules: values compare in BSON order,
//! a missing field sorts as null, an array field sorts by its smallest element when
//! ascending and its largest when descending (an empty array below null).

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::arith::{is_number, to_f64};
use super::compare::compare;
use super::path::lookup;
use super::QueryError;

/// A parsed sort key: path and direction (true = ascending).
pub type SortKey = (String, bool);

/// Parse `{a: 1, b: -1}`.
pub fn parse_spec(spec: &Document) -> Result<Vec<SortKey>, QueryError> {
    spec.iter()
        .map(|(k, v)| match v {
            v if is_number(v) && to_f64(v) == 1.0 => Ok((k.clone(), true)),
            v if is_number(v) && to_f64(v) == -1.0 => Ok((k.clone(), false)),
            Bson::Document(d) if d.contains_key("$meta") => Err(QueryError::bad_value(
                "$meta sort keys are not supported by the emulator",
            )),
            _ => Err(QueryError::new(
                15975,
                "Location15975",
                "$sort key ordering must be 1 (for ascending) or -1 (for descending)",
            )),
        })
        .collect()
}

/// The value a document sorts by for one key.
fn key_value(doc: &Document, path: &str, asc: bool) -> Bson {
    let mut vals: Vec<Bson> = Vec::new();
    for v in lookup(doc, path) {
        match v {
            None => vals.push(Bson::Null),
            Some(Bson::Array(a)) if a.is_empty() => vals.push(Bson::Undefined),
            Some(Bson::Array(a)) => vals.extend(a.iter().cloned()),
            Some(x) => vals.push(x.clone()),
        }
    }
    let want = if asc {
        Ordering::Less
    } else {
        Ordering::Greater
    };
    vals.into_iter()
        .reduce(|best, x| if compare(&x, &best) == want { x } else { best })
        .unwrap_or(Bson::Null)
}

/// Compare two documents by parsed sort keys.
pub fn compare_docs(a: &Document, b: &Document, keys: &[SortKey]) -> Ordering {
    for (path, asc) in keys {
        let o = compare(&key_value(a, path, *asc), &key_value(b, path, *asc));
        let o = if *asc { o } else { o.reverse() };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// See [`super::sort_documents`].
pub fn sort_documents(docs: &mut [Document], spec: &Document) -> Result<(), QueryError> {
    let keys = parse_spec(spec)?;
    if keys.is_empty() {
        return Ok(());
    }
    // Precompute keys once per document; stable sort keeps natural order on ties.
    // `$natural` sorts by position in the input.
    let mut keyed: Vec<(Vec<Bson>, Document)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let k = keys
                .iter()
                .map(|(p, asc)| match p.as_str() {
                    "$natural" => Bson::Int64(i as i64),
                    _ => key_value(d, p, *asc),
                })
                .collect();
            (k, d.clone())
        })
        .collect();
    keyed.sort_by(|(ka, _), (kb, _)| {
        for ((x, y), (_, asc)) in ka.iter().zip(kb.iter()).zip(keys.iter()) {
            let o = compare(x, y);
            let o = if *asc { o } else { o.reverse() };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
    for (slot, (_, d)) in docs.iter_mut().zip(keyed) {
        *slot = d;
    }
    Ok(())
}

/// `$push`'s `$sort` modifier: `1`/`-1` sorts values, a document sorts documents.
pub fn sort_values(arr: &mut [Bson], spec: &Bson) -> Result<(), QueryError> {
    match spec {
        Bson::Document(d) => {
            let keys = parse_spec(d)?;
            let empty = Document::new();
            arr.sort_by(|a, b| {
                let da = if let Bson::Document(x) = a { x } else { &empty };
                let db = if let Bson::Document(x) = b { x } else { &empty };
                compare_docs(da, db, &keys)
            });
            Ok(())
        }
        v if is_number(v) && (to_f64(v) == 1.0 || to_f64(v) == -1.0) => {
            let asc = to_f64(v) == 1.0;
            arr.sort_by(|a, b| if asc { compare(a, b) } else { compare(b, a) });
            Ok(())
        }
        _ => Err(QueryError::bad_value("The $sort is invalid: use 1/-1 to sort the whole element, or {field:1/-1} to sort embedded fields")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn ids(docs: &[Document]) -> Vec<i32> {
        docs.iter().map(|d| d.get_i32("_id").unwrap()).collect()
    }

    #[test]
    fn sorts_across_types_with_missing_as_null() {
        let mut docs = vec![
            doc! {"_id": 1, "a": "s"},
            doc! {"_id": 2, "a": 5},
            doc! {"_id": 3},
            doc! {"_id": 4, "a": 2.5},
        ];
        sort_documents(&mut docs, &doc! {"a": 1}).unwrap();
        assert_eq!(ids(&docs), vec![3, 4, 2, 1]);
        sort_documents(&mut docs, &doc! {"a": -1}).unwrap();
        assert_eq!(ids(&docs), vec![1, 2, 4, 3]);
    }

    #[test]
    fn arrays_sort_by_min_ascending_and_max_descending() {
        let mut docs = vec![doc! {"_id": 1, "a": [1, 10]}, doc! {"_id": 2, "a": [3, 4]}];
        sort_documents(&mut docs, &doc! {"a": 1}).unwrap();
        assert_eq!(ids(&docs), vec![1, 2]);
        sort_documents(&mut docs, &doc! {"a": -1}).unwrap();
        assert_eq!(ids(&docs), vec![1, 2]);
    }

    #[test]
    fn sort_is_stable_and_compound() {
        let mut docs = vec![
            doc! {"_id": 1, "a": 1, "b": 1},
            doc! {"_id": 2, "a": 0, "b": 1},
            doc! {"_id": 3, "a": 1, "b": 2},
            doc! {"_id": 4, "a": 0, "b": 1},
        ];
        sort_documents(&mut docs, &doc! {"b": -1, "a": 1}).unwrap();
        assert_eq!(ids(&docs), vec![3, 2, 4, 1]);
    }

    #[test]
    fn natural_descending_reverses_input_order() {
        let mut docs = vec![doc! {"_id": 1}, doc! {"_id": 2}, doc! {"_id": 3}];
        sort_documents(&mut docs, &doc! {"$natural": -1}).unwrap();
        assert_eq!(ids(&docs), vec![3, 2, 1]);
    }

    #[test]
    fn bad_direction_is_rejected() {
        let mut docs = vec![];
        assert_eq!(
            sort_documents(&mut docs, &doc! {"a": 2}).unwrap_err().code,
            15975
        );
    }
}
