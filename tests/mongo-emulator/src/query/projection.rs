//! Projections for `find` and the `$project`/`$unset` stages: inclusion (document field
//! order kept, `_id` included unless excluded, computed fields appended), exclusion,
//! dotted paths through embedded documents and arrays, `$slice` and `$elemMatch`.

use bson::{Bson, Document};

use super::arith::{is_number, to_f64};
use super::{expr, matcher, QueryError};

/// One node of a parsed projection.
#[derive(Debug, Clone)]
enum PNode {
    /// Keep the field.
    Include,
    /// Drop the field.
    Exclude,
    /// A computed field.
    Expr(Bson),
    /// `$slice: n` or `$slice: [skip, n]`.
    Slice(i64, Option<i64>),
    /// `$elemMatch`: keep the first matching element.
    ElemMatch(Box<matcher::Node>),
    /// A nested projection.
    Children(Vec<(String, PNode)>),
}

fn collision(path: &str) -> QueryError {
    QueryError::new(31250, "Location31250", format!("Path collision at {path}"))
}

fn insert(
    tree: &mut Vec<(String, PNode)>,
    parts: &[&str],
    node: PNode,
    full: &str,
) -> Result<(), QueryError> {
    let (first, rest) = parts.split_first().expect("non-empty path");
    let pos = tree.iter().position(|(k, _)| k == first);
    if rest.is_empty() {
        if pos.is_some() {
            return Err(collision(full));
        }
        tree.push((first.to_string(), node));
        return Ok(());
    }
    let idx = match pos {
        Some(i) => i,
        None => {
            tree.push((first.to_string(), PNode::Children(Vec::new())));
            tree.len() - 1
        }
    };
    match &mut tree[idx].1 {
        PNode::Children(c) => insert(c, rest, node, full),
        _ => Err(collision(full)),
    }
}

/// Projection mode decided by the first include/exclude seen (ignoring top-level `_id`).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Undecided,
    Inclusion,
    Exclusion,
}

fn parse(
    spec: &Document,
    prefix: &str,
    tree: &mut Vec<(String, PNode)>,
    mode: &mut Mode,
) -> Result<(), QueryError> {
    for (k, v) in spec {
        let full = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if k.split('.').any(|p| p == "$") || k.starts_with('$') {
            return Err(QueryError::bad_value(format!("projection field '{full}' (positional or $-prefixed) is not supported by the emulator")));
        }
        let node = match v {
            Bson::Boolean(_)
            | Bson::Int32(_)
            | Bson::Int64(_)
            | Bson::Double(_)
            | Bson::Decimal128(_) => {
                if expr::truthy(Some(v)) {
                    PNode::Include
                } else {
                    PNode::Exclude
                }
            }
            Bson::Document(d) if d.len() == 1 && d.contains_key("$slice") => {
                match d.get("$slice") {
                    Some(n) if is_number(n) => PNode::Slice(to_f64(n) as i64, None),
                    Some(Bson::Array(a)) if a.len() == 2 && a.iter().all(is_number) => {
                        let lim = to_f64(&a[1]) as i64;
                        if lim <= 0 {
                            return Err(QueryError::new(
                                28724,
                                "Location28724",
                                "Second argument to $slice must be a positive number",
                            ));
                        }
                        PNode::Slice(to_f64(&a[0]) as i64, Some(lim))
                    }
                    _ => {
                        return Err(QueryError::new(
                            28667,
                            "Location28667",
                            "Invalid $slice syntax: expected a number or an array of two numbers",
                        ))
                    }
                }
            }
            Bson::Document(d) if d.len() == 1 && d.contains_key("$elemMatch") => {
                match d.get("$elemMatch") {
                    Some(Bson::Document(f)) => PNode::ElemMatch(Box::new(matcher::parse(f)?)),
                    _ => return Err(QueryError::bad_value("$elemMatch needs an Object")),
                }
            }
            Bson::Document(d) if d.keys().next().is_some_and(|f| f.starts_with('$')) => {
                expr::validate(v)?;
                PNode::Expr(v.clone())
            }
            Bson::Document(d) => {
                if d.is_empty() {
                    return Err(QueryError::new(51270, "Location51270", format!("An empty sub-projection is not a valid value. Found empty object at path {full}")));
                }
                let mut sub = Vec::new();
                parse(d, &full, &mut sub, mode)?;
                let parts: Vec<&str> = k.split('.').collect();
                insert(tree, &parts, PNode::Children(sub), &full)?;
                continue;
            }
            other => PNode::Expr(other.clone()),
        };
        let is_top_id = full == "_id";
        let wants = match node {
            PNode::Include | PNode::Expr(_) => Some(Mode::Inclusion),
            PNode::Exclude => Some(Mode::Exclusion),
            _ => None,
        };
        if let (Some(w), false) = (wants, is_top_id) {
            match (*mode, w) {
                (Mode::Undecided, _) => *mode = w,
                (Mode::Inclusion, Mode::Exclusion) => {
                    return Err(QueryError::new(
                        31254,
                        "Location31254",
                        format!("Cannot do exclusion on field {full} in inclusion projection"),
                    ))
                }
                (Mode::Exclusion, Mode::Inclusion) => {
                    return Err(QueryError::new(
                        31253,
                        "Location31253",
                        format!("Cannot do inclusion on field {full} in exclusion projection"),
                    ))
                }
                _ => {}
            }
        }
        let parts: Vec<&str> = k.split('.').collect();
        insert(tree, &parts, node, &full)?;
    }
    Ok(())
}

fn slice(v: &Bson, skip: i64, limit: Option<i64>) -> Bson {
    let Bson::Array(a) = v else { return v.clone() };
    let len = a.len() as i64;
    let (start, n) = match limit {
        None if skip >= 0 => (0, skip),
        None => ((len + skip).max(0), len),
        Some(l) if skip >= 0 => (skip.min(len), l),
        Some(l) => ((len + skip).max(0), l),
    };
    Bson::Array(
        a.iter()
            .skip(start as usize)
            .take(n.max(0) as usize)
            .cloned()
            .collect(),
    )
}

fn elem_match(v: &Bson, node: &matcher::Node) -> Result<Option<Bson>, QueryError> {
    if let Bson::Array(a) = v {
        for el in a {
            if let Bson::Document(d) = el {
                if matcher::eval(node, d)? {
                    return Ok(Some(Bson::Array(vec![el.clone()])));
                }
            }
        }
    }
    Ok(None)
}

fn include(
    doc: &Document,
    tree: &[(String, PNode)],
    root: &Document,
    top: bool,
) -> Result<Document, QueryError> {
    let mut out = Document::new();
    let find = |k: &str| tree.iter().find(|(n, _)| n == k).map(|(_, p)| p);
    for (k, v) in doc {
        let node = match find(k) {
            None if top && k == "_id" => &PNode::Include,
            None => continue,
            Some(n) => n,
        };
        match node {
            PNode::Include => {
                out.insert(k.clone(), v.clone());
            }
            PNode::Slice(s, l) => {
                out.insert(k.clone(), slice(v, *s, *l));
            }
            PNode::ElemMatch(m) => {
                if let Some(x) = elem_match(v, m)? {
                    out.insert(k.clone(), x);
                }
            }
            PNode::Children(c) => {
                if let Some(x) = include_value(v, c, root)? {
                    out.insert(k.clone(), x);
                }
            }
            PNode::Exclude | PNode::Expr(_) => {}
        }
    }
    for (k, node) in tree {
        if let PNode::Expr(e) = node {
            if let Some(x) = expr::eval_opt(e, root)? {
                out.insert(k.clone(), x);
            }
        }
    }
    Ok(out)
}

fn include_value(
    v: &Bson,
    c: &[(String, PNode)],
    root: &Document,
) -> Result<Option<Bson>, QueryError> {
    Ok(match v {
        Bson::Document(d) => Some(Bson::Document(include(d, c, root, false)?)),
        Bson::Array(a) => {
            let mut items = Vec::new();
            for el in a {
                if let Some(x) = include_value(el, c, root)? {
                    items.push(x);
                }
            }
            Some(Bson::Array(items))
        }
        _ => None,
    })
}

fn exclude(doc: &Document, tree: &[(String, PNode)]) -> Result<Document, QueryError> {
    let mut out = Document::new();
    for (k, v) in doc {
        match tree.iter().find(|(n, _)| n == k).map(|(_, p)| p) {
            Some(PNode::Exclude) => {}
            Some(PNode::Slice(s, l)) => {
                out.insert(k.clone(), slice(v, *s, *l));
            }
            Some(PNode::ElemMatch(m)) => {
                if let Some(x) = elem_match(v, m)? {
                    out.insert(k.clone(), x);
                }
            }
            Some(PNode::Children(c)) => {
                out.insert(k.clone(), exclude_value(v, c)?);
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(out)
}

fn exclude_value(v: &Bson, c: &[(String, PNode)]) -> Result<Bson, QueryError> {
    Ok(match v {
        Bson::Document(d) => Bson::Document(exclude(d, c)?),
        Bson::Array(a) => Bson::Array(
            a.iter()
                .map(|x| exclude_value(x, c))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

/// A parsed projection, applied to many documents.
#[derive(Debug, Clone)]
pub struct Projection {
    /// The projection tree.
    tree: Vec<(String, PNode)>,
    /// Inclusion (true) or exclusion.
    inclusion: bool,
}

impl Projection {
    /// Parse and validate a projection spec.
    pub fn parse(spec: &Document) -> Result<Projection, QueryError> {
        let mut tree = Vec::new();
        let mut mode = Mode::Undecided;
        parse(spec, "", &mut tree, &mut mode)?;
        let id_kept = tree
            .iter()
            .any(|(k, n)| k == "_id" && !matches!(n, PNode::Exclude));
        let inclusion = mode == Mode::Inclusion || (mode == Mode::Undecided && id_kept);
        Ok(Projection { tree, inclusion })
    }

    /// Project one document.
    pub fn apply(&self, doc: &Document) -> Result<Document, QueryError> {
        if self.inclusion {
            include(doc, &self.tree, doc, true)
        } else {
            exclude(doc, &self.tree)
        }
    }
}

/// See [`super::project`].
pub fn project(doc: &Document, spec: &Document) -> Result<Document, QueryError> {
    Projection::parse(spec)?.apply(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn inclusion_keeps_document_order_and_id() {
        let d = doc! {"_id": 1, "a": 1, "b": 2, "c": 3};
        assert_eq!(
            project(&d, &doc! {"c": 1, "a": 1}).unwrap(),
            doc! {"_id": 1, "a": 1, "c": 3}
        );
        assert_eq!(
            project(&d, &doc! {"c": 1, "_id": 0}).unwrap(),
            doc! {"c": 3}
        );
    }

    #[test]
    fn exclusion_and_dotted_paths() {
        let d = doc! {"_id": 1, "a": {"x": 1, "y": 2}, "l": [{"x": 1, "y": 2}, 5]};
        assert_eq!(
            project(&d, &doc! {"a.x": 0, "l.y": 0}).unwrap(),
            doc! {"_id": 1, "a": {"y": 2}, "l": [{"x": 1}, 5]}
        );
        assert_eq!(
            project(&d, &doc! {"a.y": 1, "l.x": 1}).unwrap(),
            doc! {"_id": 1, "a": {"y": 2}, "l": [{"x": 1}]}
        );
    }

    #[test]
    fn computed_fields_slice_and_elem_match() {
        let d = doc! {"_id": 1, "a": 2, "l": [1, 2, 3], "o": [{"k": 1}, {"k": 2}]};
        assert_eq!(
            project(&d, &doc! {"_id": 0, "twice": {"$multiply": ["$a", 2]}}).unwrap(),
            doc! {"twice": 4}
        );
        assert_eq!(
            project(&d, &doc! {"l": {"$slice": -2}, "o": 0}).unwrap(),
            doc! {"_id": 1, "a": 2, "l": [2, 3]}
        );
        assert_eq!(
            project(&d, &doc! {"o": {"$elemMatch": {"k": 2}}}).unwrap(),
            doc! {"_id": 1, "a": 2, "l": [1, 2, 3], "o": [{"k": 2}]}
        );
    }

    #[test]
    fn mixing_inclusion_and_exclusion_fails() {
        let d = doc! {};
        assert_eq!(project(&d, &doc! {"a": 1, "b": 0}).unwrap_err().code, 31254);
        assert_eq!(project(&d, &doc! {"a": 0, "b": 1}).unwrap_err().code, 31253);
        assert_eq!(
            project(&d, &doc! {"a": 1, "a.b": 1}).unwrap_err().code,
            31250
        );
    }
}
