//! Dotted-path lookup as MongoDB's query layer does it: a path walks embedded
//! documents, fans out over array elements that are documents, and a numeric
//! component also indexes the array. Shared by matching, sort and upsert seeding.

use bson::{Bson, Document};

/// Whether a path component is an array index (all ASCII digits).
pub fn is_index(part: &str) -> bool {
    !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())
}

/// Every value `path` reaches in `doc`; `None` stands for "missing" on a branch.
/// Never empty.
pub fn lookup<'a>(doc: &'a Document, path: &str) -> Vec<Option<&'a Bson>> {
    let parts: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    match doc.get(parts[0]) {
        Some(v) => walk(v, &parts[1..], &mut out),
        None => out.push(None),
    }
    out
}

fn walk<'a>(v: &'a Bson, parts: &[&str], out: &mut Vec<Option<&'a Bson>>) {
    let Some((first, rest)) = parts.split_first() else {
        out.push(Some(v));
        return;
    };
    match v {
        Bson::Document(d) => match d.get(*first) {
            Some(x) => walk(x, rest, out),
            None => out.push(None),
        },
        Bson::Array(arr) => {
            let before = out.len();
            if is_index(first) {
                if let Some(x) = first.parse::<usize>().ok().and_then(|i| arr.get(i)) {
                    walk(x, rest, out);
                }
            }
            for el in arr {
                if matches!(el, Bson::Document(_)) {
                    walk(el, parts, out);
                }
            }
            if out.len() == before {
                out.push(None);
            }
        }
        _ => out.push(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn lookup_fans_out_over_array_documents_and_indexes() {
        let d = doc! {"a": [{"b": 1}, {"b": 2}, {"c": 3}, 7]};
        let got: Vec<_> = lookup(&d, "a.b").into_iter().map(|v| v.cloned()).collect();
        assert_eq!(got, vec![Some(Bson::Int32(1)), Some(Bson::Int32(2)), None]);
        let got: Vec<_> = lookup(&d, "a.3").into_iter().map(|v| v.cloned()).collect();
        assert_eq!(got, vec![Some(Bson::Int32(7)), None, None, None]);
    }

    #[test]
    fn lookup_reports_missing_through_scalars() {
        let d = doc! {"a": 1};
        assert_eq!(lookup(&d, "a.b"), vec![None]);
        assert_eq!(lookup(&d, "x"), vec![None]);
    }
}
