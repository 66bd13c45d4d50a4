//! `let`: variables a command defines for its expressions (`find`, `aggregate`,
//! `update`, `delete`, `findAndModify`, MongoDB 5.0+). Before the command runs, each
//! `$$name` (or `$$name.path`) in an aggregation expression is replaced by the
//! variable's value as a `$literal`: in a filter only inside `$expr`, in a pipeline
//! everywhere but outside `$expr` in `$match`, as the server scopes them.

use bson::{doc, Bson, Document};

use crate::error::{CmdResult, CommandError};
use crate::query;

/// Substitutes the command's `let` variables into the parts of `body` that hold
/// expressions; a command without `let` is left alone.
pub fn apply(command: &str, body: &mut Document) -> CmdResult<()> {
    let vars = match body.get("let") {
        None => return Ok(()),
        Some(Bson::Document(d)) => d.clone(),
        Some(_) => {
            return Err(CommandError::type_mismatch(
                &format!("{command}.let"),
                "object",
            ))
        }
    };
    // Values are expressions over no document (constants, mostly).
    let mut values = Document::new();
    for (k, v) in &vars {
        values.insert(k.clone(), query::eval_expression(v, &Document::new())?);
    }
    let statements = |body: &mut Document, field: &str, f: &dyn Fn(&mut Document)| {
        if let Some(Bson::Array(stmts)) = body.get_mut(field) {
            for s in stmts.iter_mut() {
                if let Bson::Document(s) = s {
                    f(s);
                }
            }
        }
    };
    match command {
        "find" => filter(body.get_mut("filter"), &values),
        "aggregate" => pipeline(body.get_mut("pipeline"), &values),
        "delete" => statements(body, "deletes", &|s| filter(s.get_mut("q"), &values)),
        "update" => statements(body, "updates", &|s| {
            filter(s.get_mut("q"), &values);
            pipeline(s.get_mut("u"), &values);
        }),
        "findAndModify" | "findandmodify" => {
            filter(body.get_mut("query"), &values);
            pipeline(body.get_mut("update"), &values);
        }
        _ => {}
    }
    Ok(())
}

/// In a query filter: only under `$expr`.
fn filter(v: Option<&mut Bson>, vars: &Document) {
    if let Some(v) = v {
        walk(v, vars, false);
    }
}

/// In a pipeline (an array of stages; an update document is left alone).
fn pipeline(v: Option<&mut Bson>, vars: &Document) {
    let Some(Bson::Array(stages)) = v else { return };
    for st in stages.iter_mut() {
        let is_match = matches!(st, Bson::Document(d) if d.contains_key("$match"));
        walk(st, vars, !is_match);
    }
}

fn walk(v: &mut Bson, vars: &Document, in_expr: bool) {
    match v {
        Bson::String(s) if in_expr && s.starts_with("$$") => {
            let mut parts = s[2..].split('.');
            let name = parts.next().unwrap_or("");
            if let Some(value) = vars.get(name) {
                let mut at = Some(value);
                for p in parts {
                    at = match at {
                        Some(Bson::Document(d)) => d.get(p),
                        _ => None,
                    };
                }
                let value = at.cloned().unwrap_or(Bson::Null);
                *v = Bson::Document(doc! {"$literal": value});
            }
        }
        Bson::Document(d) => {
            if d.contains_key("$literal") {
                return;
            }
            for (k, x) in d.iter_mut() {
                walk(x, vars, in_expr || k == "$expr");
            }
        }
        Bson::Array(a) => a.iter_mut().for_each(|x| walk(x, vars, in_expr)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_substituted_in_expressions_only() {
        let mut body = doc! {
            "find": "c",
            "filter": {"$expr": {"$eq": ["$_id", "$$id"]}, "name": "$$id"},
            "let": {"id": 1},
        };
        apply("find", &mut body).unwrap();
        assert_eq!(
            body.get_document("filter").unwrap(),
            &doc! {"$expr": {"$eq": ["$_id", {"$literal": 1}]}, "name": "$$id"}
        );
        let mut body = doc! {
            "update": "c",
            "updates": [{"q": {}, "u": [{"$set": {"x": "$$v.a"}}]}],
            "let": {"v": {"a": "s"}},
        };
        apply("update", &mut body).unwrap();
        let u = &body.get_array("updates").unwrap()[0];
        assert_eq!(
            u.as_document().unwrap().get_array("u").unwrap()[0],
            Bson::Document(doc! {"$set": {"x": {"$literal": "s"}}})
        );
    }
}
