//! `updateDescription` for update change events: which fields changed or were added
//! (`updatedFields`, with their new values) and which were removed (`removedFields`).
//! Sub-documents that were edited in place (their surviving fields keep their order and
//! new fields were appended, as `$set`/`$unset` on dotted paths leave them) are reported
//! with dotted paths, and so are arrays that kept at least one element in place and did
//! not shrink (`$push`, `$set` of `a.1`: `{"a.2": v}`); any other change to a
//! sub-document or array is reported as the whole new value.

use bson::{Bson, Document};

/// Whether `after` looks like `before` edited in place: every common key in the same
/// relative order, at least one common key, and new keys only after the common ones.
fn edited_in_place(before: &Document, after: &Document) -> bool {
    let common_before: Vec<&String> = before
        .keys()
        .filter(|k| after.contains_key(k.as_str()))
        .collect();
    if common_before.is_empty() {
        return false;
    }
    let mut seen_new = false;
    let mut common_after = Vec::new();
    for k in after.keys() {
        if before.contains_key(k.as_str()) {
            if seen_new {
                return false;
            }
            common_after.push(k);
        } else {
            seen_new = true;
        }
    }
    common_before == common_after
}

fn diff(
    before: &Document,
    after: &Document,
    prefix: &str,
    updated: &mut Document,
    removed: &mut Vec<String>,
) {
    for (k, v) in after {
        let path = format!("{prefix}{k}");
        match (before.get(k), v) {
            (Some(b), _) if b == v => {}
            (Some(Bson::Document(bd)), Bson::Document(ad)) if edited_in_place(bd, ad) => {
                diff(bd, ad, &format!("{path}."), updated, removed);
            }
            (Some(Bson::Array(ba)), Bson::Array(aa)) if array_edited_in_place(ba, aa) => {
                diff_array(ba, aa, &path, updated, removed);
            }
            _ => {
                updated.insert(path, v.clone());
            }
        }
    }
    for k in before.keys() {
        if !after.contains_key(k.as_str()) {
            removed.push(format!("{prefix}{k}"));
        }
    }
}

/// Whether `after` is `before` with elements changed or appended (never shrunk) and at
/// least one element left as it was.
fn array_edited_in_place(before: &[Bson], after: &[Bson]) -> bool {
    after.len() >= before.len() && before.iter().zip(after).any(|(b, a)| b == a)
}

fn diff_array(
    before: &[Bson],
    after: &[Bson],
    path: &str,
    updated: &mut Document,
    removed: &mut Vec<String>,
) {
    for (i, a) in after.iter().enumerate() {
        let p = format!("{path}.{i}");
        match (before.get(i), a) {
            (Some(b), _) if b == a => {}
            (Some(Bson::Document(bd)), Bson::Document(ad)) if edited_in_place(bd, ad) => {
                diff(bd, ad, &format!("{p}."), updated, removed);
            }
            _ => {
                updated.insert(p, a.clone());
            }
        }
    }
}

/// See [`super::update_description`].
pub fn update_description(before: &Document, after: &Document) -> (Document, Vec<String>) {
    let mut updated = Document::new();
    let mut removed = Vec::new();
    diff(before, after, "", &mut updated, &mut removed);
    (updated, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn top_level_changes_additions_and_removals() {
        let before = doc! {"_id": 1, "a": 1, "b": 2, "c": 3};
        let after = doc! {"_id": 1, "a": 1, "b": 5, "d": 4};
        let (u, r) = update_description(&before, &after);
        assert_eq!(u, doc! {"b": 5, "d": 4});
        assert_eq!(r, vec!["c".to_string()]);
    }

    #[test]
    fn sub_document_edited_in_place_is_reported_with_dotted_paths() {
        let before = doc! {"_id": 1, "o": {"x": 1, "y": 2, "z": 3}};
        let after = doc! {"_id": 1, "o": {"x": 1, "y": 9, "w": 0}};
        let (u, r) = update_description(&before, &after);
        assert_eq!(u, doc! {"o.y": 9, "o.w": 0});
        assert_eq!(r, vec!["o.z".to_string()]);
    }

    #[test]
    fn replaced_sub_document_and_arrays_are_reported_whole() {
        let before = doc! {"_id": 1, "o": {"x": 1}, "l": [1, 2], "m": [1, 2]};
        let after = doc! {"_id": 1, "o": {"q": 1}, "l": [1], "m": [3, 4, 5]};
        let (u, r) = update_description(&before, &after);
        assert_eq!(u, doc! {"o": {"q": 1}, "l": [1], "m": [3, 4, 5]});
        assert!(r.is_empty());
    }

    #[test]
    fn pushed_and_changed_array_elements_are_reported_by_index() {
        let before = doc! {"_id": 1, "l": [1, {"k": 1}]};
        let after = doc! {"_id": 1, "l": [1, {"k": 2}, 3]};
        let (u, r) = update_description(&before, &after);
        assert_eq!(u, doc! {"l.1.k": 2, "l.2": 3});
        assert!(r.is_empty());
    }

    #[test]
    fn type_change_of_equal_number_counts_as_update() {
        let (u, _) = update_description(&doc! {"a": 1}, &doc! {"a": 1.0});
        assert_eq!(u, doc! {"a": 1.0});
    }
}
