//! The document an upsert starts from: the filter's equality conditions (`{a: 1}`,
//! `{a: {$eq: 1}}`, a one-element `$in`, conditions under `$and`), dotted paths
//! expanded into embedded documents, `_id` first.

use bson::{Bson, Document};

use super::fieldpath;
use super::update::id_first;
use super::QueryError;

fn collect(filter: &Document, out: &mut Vec<(String, Bson)>) -> Result<(), QueryError> {
    for (k, v) in filter {
        if k == "$and" {
            if let Bson::Array(items) = v {
                for it in items {
                    if let Bson::Document(d) = it {
                        collect(d, out)?;
                    }
                }
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        match v {
            Bson::Document(d)
                if d.keys()
                    .next()
                    .is_some_and(|f| f.starts_with('$') && f != "$ref" && f != "$id") =>
            {
                if let Some(x) = d.get("$eq") {
                    out.push((k.clone(), x.clone()));
                } else if let Some(Bson::Array(a)) = d.get("$in") {
                    if a.len() == 1 && !matches!(a[0], Bson::RegularExpression(_)) {
                        out.push((k.clone(), a[0].clone()));
                    }
                }
            }
            Bson::RegularExpression(_) => {}
            other => out.push((k.clone(), other.clone())),
        }
    }
    Ok(())
}

fn overlaps(a: &str, b: &str) -> bool {
    a == b || (b.starts_with(a) && b.as_bytes().get(a.len()) == Some(&b'.'))
}

/// See [`super::upsert_seed`].
pub fn upsert_seed(filter: &Document) -> Result<Document, QueryError> {
    super::validate_filter(filter)?;
    let mut fields = Vec::new();
    collect(filter, &mut fields)?;
    for (i, (a, _)) in fields.iter().enumerate() {
        for (b, _) in &fields[..i] {
            if a == b {
                return Err(QueryError::new(
                    54,
                    "NotSingleValueField",
                    format!("cannot infer query fields to set, path '{a}' is matched twice"),
                ));
            }
            if overlaps(a, b) || overlaps(b, a) {
                let (short, long) = if a.len() < b.len() { (a, b) } else { (b, a) };
                return Err(QueryError::new(54, "NotSingleValueField", format!("cannot infer query fields to set, both paths '{long}' and '{short}' are matched")));
            }
        }
    }
    let mut out = Document::new();
    for (path, v) in fields {
        let parts: Vec<&str> = path.split('.').collect();
        fieldpath::set(&mut out, &parts, v)?;
    }
    Ok(id_first(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn seed_takes_equalities_and_expands_dotted_paths() {
        let f = doc! {"a": 1, "b.c": "x", "n": {"$gt": 5}, "e": {"$eq": 2}, "$and": [{"z": true}], "_id": 7};
        assert_eq!(
            upsert_seed(&f).unwrap(),
            doc! {"_id": 7, "a": 1, "b": {"c": "x"}, "e": 2, "z": true}
        );
    }

    #[test]
    fn conditional_upsert_filter_seeds_only_id() {
        let f = doc! {"_id": 1, "updatedAt": {"$lt": bson::DateTime::from_millis(5)}};
        assert_eq!(upsert_seed(&f).unwrap(), doc! {"_id": 1});
    }

    #[test]
    fn a_path_matched_twice_is_an_error() {
        assert_eq!(
            upsert_seed(&doc! {"a": 1, "$and": [{"a": 2}]})
                .unwrap_err()
                .code,
            54
        );
        assert_eq!(
            upsert_seed(&doc! {"a": {"b": 1}, "a.b": 1})
                .unwrap_err()
                .code,
            54
        );
    }
}
