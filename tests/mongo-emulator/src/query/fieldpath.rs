//! Mutable dotted-path access for update operators: set (creating embedded documents
//! and padding arrays as MongoDB does), get and remove a single field.

use bson::{Bson, Document};

use super::path::is_index;
use super::types::type_name;
use super::QueryError;

/// How far `$set` may pad an array with nulls (MongoDB's limit).
const MAX_BACKFILL: usize = 1_500_000;

fn not_viable(part: &str, parent: &str, v: &Bson) -> QueryError {
    QueryError::new(
        28,
        "PathNotViable",
        format!("Cannot create field '{part}' in element {{{parent}: {v}}}"),
    )
}

/// Set `parts` under `root` to `val`, creating missing embedded documents.
pub fn set(root: &mut Document, parts: &[&str], val: Bson) -> Result<(), QueryError> {
    let (first, rest) = parts.split_first().expect("paths are never empty");
    if rest.is_empty() {
        root.insert(*first, val);
        return Ok(());
    }
    if !root.contains_key(*first) {
        root.insert(*first, Document::new());
    }
    let child = root.get_mut(*first).expect("inserted above");
    set_in(child, first, rest, val)
}

fn set_in(cur: &mut Bson, name: &str, parts: &[&str], val: Bson) -> Result<(), QueryError> {
    let (first, rest) = parts.split_first().expect("paths are never empty");
    match cur {
        Bson::Document(d) => set(d, parts, val),
        Bson::Array(a) if is_index(first) => {
            let idx: usize = first
                .parse()
                .map_err(|_| not_viable(first, name, &Bson::Array(a.clone())))?;
            if idx >= a.len() {
                if idx - a.len() > MAX_BACKFILL {
                    return Err(QueryError::bad_value(format!(
                        "can't backfill more than {MAX_BACKFILL} elements"
                    )));
                }
                a.resize(idx + 1, Bson::Null);
            }
            if rest.is_empty() {
                a[idx] = val;
                return Ok(());
            }
            if matches!(a[idx], Bson::Null) {
                a[idx] = Bson::Document(Document::new());
            }
            set_in(&mut a[idx], first, rest, val)
        }
        other => Err(not_viable(first, name, other)),
    }
}

/// The value at `parts` (documents and explicit array indexes only).
pub fn get<'a>(root: &'a Document, parts: &[&str]) -> Option<&'a Bson> {
    let (first, rest) = parts.split_first()?;
    let mut cur = root.get(*first)?;
    for p in rest {
        cur = match cur {
            Bson::Document(d) => d.get(*p)?,
            Bson::Array(a) if is_index(p) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Mutable access to the value at `parts`.
pub fn get_mut<'a>(root: &'a mut Document, parts: &[&str]) -> Option<&'a mut Bson> {
    let (first, rest) = parts.split_first()?;
    let mut cur = root.get_mut(*first)?;
    for p in rest {
        cur = match cur {
            Bson::Document(d) => d.get_mut(*p)?,
            Bson::Array(a) if is_index(p) => a.get_mut(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Remove the field at `parts`; an array element is set to null instead (as `$unset`
/// does). Returns the removed value.
pub fn remove(root: &mut Document, parts: &[&str]) -> Option<Bson> {
    let (last, parent) = parts.split_last()?;
    if parent.is_empty() {
        return root.remove(*last);
    }
    match get_mut(root, parent)? {
        Bson::Document(d) => d.remove(*last),
        Bson::Array(a) if is_index(last) => {
            let slot = a.get_mut(last.parse::<usize>().ok()?)?;
            Some(std::mem::replace(slot, Bson::Null))
        }
        _ => None,
    }
}

/// Describe a value's type for error messages.
pub fn describe(v: &Bson) -> &'static str {
    type_name(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn set_creates_embedded_documents_and_pads_arrays() {
        let mut d = doc! {"a": [1]};
        set(&mut d, &["x", "y"], Bson::Int32(1)).unwrap();
        set(&mut d, &["a", "3"], Bson::Int32(4)).unwrap();
        assert_eq!(d, doc! {"a": [1, null, null, 4], "x": {"y": 1}});
    }

    #[test]
    fn set_through_a_scalar_is_path_not_viable() {
        let mut d = doc! {"a": 1};
        let e = set(&mut d, &["a", "b"], Bson::Int32(1)).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (28, "Cannot create field 'b' in element {a: 1}")
        );
    }

    #[test]
    fn remove_nulls_array_elements() {
        let mut d = doc! {"a": [1, 2], "b": {"c": 1, "d": 2}};
        remove(&mut d, &["a", "0"]);
        remove(&mut d, &["b", "c"]);
        assert_eq!(d, doc! {"a": [null, 2], "b": {"d": 2}});
    }
}
