//! `updateDescription` for update change events: which fields changed or were added
//! (`updatedFields`, with their new values), which were removed (`removedFields`),
//! which arrays were shortened (`truncatedArrays`), and how to read the paths whose
//! numeric parts could be array indices or field names (`disambiguatedPaths`).
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

/// An update's description, as change events carry it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateDescription {
    /// Changed or added fields by (dotted) path, with their new values.
    pub updated: Document,
    /// Removed fields by path.
    pub removed: Vec<String>,
    /// Arrays cut short: (path, new length).
    pub truncated: Vec<(String, i32)>,
    /// Each path above with a numeric part, as its parts: array indices as integers,
    /// field names as strings.
    pub disambiguated: Document,
}

fn diff(
    before: &Document,
    after: &Document,
    prefix: &str,
    updated: &mut Document,
    removed: &mut Vec<String>,
    truncated: &mut Vec<(String, i32)>,
) {
    for (k, v) in after {
        let path = format!("{prefix}{k}");
        match (before.get(k), v) {
            (Some(b), _) if b == v => {}
            (Some(Bson::Document(bd)), Bson::Document(ad)) if edited_in_place(bd, ad) => {
                diff(bd, ad, &format!("{path}."), updated, removed, truncated);
            }
            (Some(Bson::Array(ba)), Bson::Array(aa)) if array_edited_in_place(ba, aa) => {
                if aa.len() < ba.len() {
                    truncated.push((path.clone(), aa.len() as i32));
                }
                diff_array(ba, aa, &path, updated, removed, truncated);
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

/// Whether `after` is `before` with elements changed, appended or cut off the end, and
/// at least one element left as it was or a sub-document edited in place (as a dotted
/// `$set` such as `a.0.x` leaves it).
fn array_edited_in_place(before: &[Bson], after: &[Bson]) -> bool {
    before.iter().zip(after).any(|(b, a)| match (b, a) {
        (Bson::Document(bd), Bson::Document(ad)) => bd == ad || edited_in_place(bd, ad),
        _ => b == a,
    })
}

fn diff_array(
    before: &[Bson],
    after: &[Bson],
    path: &str,
    updated: &mut Document,
    removed: &mut Vec<String>,
    truncated: &mut Vec<(String, i32)>,
) {
    for (i, a) in after.iter().enumerate() {
        let p = format!("{path}.{i}");
        match (before.get(i), a) {
            (Some(b), _) if b == a => {}
            (Some(Bson::Document(bd)), Bson::Document(ad)) if edited_in_place(bd, ad) => {
                diff(bd, ad, &format!("{p}."), updated, removed, truncated);
            }
            _ => {
                updated.insert(p, a.clone());
            }
        }
    }
}

/// See [`super::update_description`].
pub fn update_description(before: &Document, after: &Document) -> UpdateDescription {
    let mut d = UpdateDescription::default();
    diff(
        before,
        after,
        "",
        &mut d.updated,
        &mut d.removed,
        &mut d.truncated,
    );
    let paths = d
        .updated
        .keys()
        .map(|p| (p.as_str(), after))
        .chain(d.removed.iter().map(|p| (p.as_str(), before)))
        .chain(d.truncated.iter().map(|(p, _)| (p.as_str(), after)));
    for (path, doc) in paths {
        if let Some(parts) = disambiguate(path, doc) {
            d.disambiguated.insert(path, parts);
        }
    }
    d
}

/// `path`'s parts as read in `doc` when one of them is numeric (an index into an
/// array, or a field name made of digits); `None` when the path is unambiguous.
fn disambiguate(path: &str, doc: &Document) -> Option<Vec<Bson>> {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !path.split('.').any(digits) {
        return None;
    }
    let mut parts = Vec::new();
    let mut in_doc = Some(doc);
    let mut in_array: Option<&Vec<Bson>> = None;
    for part in path.split('.') {
        let next = match (in_doc, in_array) {
            (_, Some(a)) if digits(part) => {
                let i: usize = part.parse().ok()?;
                parts.push(Bson::Int32(i32::try_from(i).ok()?));
                a.get(i)
            }
            (Some(d), _) => {
                parts.push(Bson::String(part.to_string()));
                d.get(part)
            }
            _ => {
                parts.push(Bson::String(part.to_string()));
                None
            }
        };
        (in_doc, in_array) = match next {
            Some(Bson::Document(d)) => (Some(d), None),
            Some(Bson::Array(a)) => (None, Some(a)),
            _ => (None, None),
        };
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn top_level_changes_additions_and_removals() {
        let before = doc! {"_id": 1, "a": 1, "b": 2, "c": 3};
        let after = doc! {"_id": 1, "a": 1, "b": 5, "d": 4};
        let UpdateDescription {
            updated: u,
            removed: r,
            ..
        } = update_description(&before, &after);
        assert_eq!(u, doc! {"b": 5, "d": 4});
        assert_eq!(r, vec!["c".to_string()]);
    }

    #[test]
    fn sub_document_edited_in_place_is_reported_with_dotted_paths() {
        let before = doc! {"_id": 1, "o": {"x": 1, "y": 2, "z": 3}};
        let after = doc! {"_id": 1, "o": {"x": 1, "y": 9, "w": 0}};
        let d = update_description(&before, &after);
        let (u, r) = (d.updated, d.removed);
        assert_eq!(u, doc! {"o.y": 9, "o.w": 0});
        assert_eq!(r, vec!["o.z".to_string()]);
    }

    #[test]
    fn replaced_sub_document_and_arrays_are_reported_whole() {
        let before = doc! {"_id": 1, "o": {"x": 1}, "l": [1, 2], "m": [1, 2]};
        let after = doc! {"_id": 1, "o": {"q": 1}, "l": [3], "m": [3, 4, 5]};
        let d = update_description(&before, &after);
        assert_eq!(d.updated, doc! {"o": {"q": 1}, "l": [3], "m": [3, 4, 5]});
        assert!(d.removed.is_empty() && d.truncated.is_empty());
    }

    #[test]
    fn a_shortened_array_is_truncated_with_its_changed_elements() {
        let before = doc! {"_id": 1, "l": ["foo", {"a": "bar"}, 1, 2, 3]};
        let after = doc! {"_id": 1, "l": ["foo", {"a": "baz"}]};
        let d = update_description(&before, &after);
        assert_eq!(d.truncated, vec![("l".to_string(), 2)]);
        assert_eq!(d.updated, doc! {"l.1.a": "baz"});
        assert_eq!(d.disambiguated, doc! {"l.1.a": ["l", 1, "a"]});
    }

    #[test]
    fn numeric_field_names_and_indices_are_disambiguated() {
        let before = doc! {"_id": 1, "a": {"1": 1}, "b": [{"1": 1}], "c": {"x": 1}};
        let after = doc! {"_id": 1, "a": {"1": 2}, "b": [{"1": 2}], "c": {"x": 2}};
        let d = update_description(&before, &after);
        assert_eq!(d.updated, doc! {"a.1": 2, "b.0.1": 2, "c.x": 2});
        assert_eq!(
            d.disambiguated,
            doc! {"a.1": ["a", "1"], "b.0.1": ["b", 0, "1"]}
        );
    }

    #[test]
    fn pushed_and_changed_array_elements_are_reported_by_index() {
        let before = doc! {"_id": 1, "l": [1, {"k": 1}]};
        let after = doc! {"_id": 1, "l": [1, {"k": 2}, 3]};
        let d = update_description(&before, &after);
        let (u, r) = (d.updated, d.removed);
        assert_eq!(u, doc! {"l.1.k": 2, "l.2": 3});
        assert!(r.is_empty());
    }

    #[test]
    fn type_change_of_equal_number_counts_as_update() {
        let d = update_description(&doc! {"a": 1}, &doc! {"a": 1.0});
        assert_eq!(d.updated, doc! {"a": 1.0});
    }
}
