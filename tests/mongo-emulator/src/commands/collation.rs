//! Collation, as far as the emulator goes: a collation of strength 1 or 2 (case
//! insensitive) makes string equality in query filters ignore case. Before the command
//! runs, `{f: "s"}`, `$eq`, `$ne`, `$in` and `$nin` string operands become anchored
//! case-insensitive patterns. Diacritics are not folded (strength 1), ordering (sort,
//! ranges) stays binary, and other collation options are ignored.

use bson::{Bson, Document, Regex};

/// Rewrites the filters `command` applies under a case-insensitive collation.
pub fn apply(command: &str, body: &mut Document) {
    let top = case_insensitive(body.get("collation"));
    match command {
        "find" if top => rewrite(body.get_mut("filter")),
        "count" if top => rewrite(body.get_mut("query")),
        "distinct" if top => rewrite(body.get_mut("query")),
        "findAndModify" | "findandmodify" if top => rewrite(body.get_mut("query")),
        "aggregate" if top => {
            if let Some(Bson::Array(stages)) = body.get_mut("pipeline") {
                for st in stages.iter_mut() {
                    if let Bson::Document(st) = st {
                        rewrite(st.get_mut("$match"));
                    }
                }
            }
        }
        "update" | "delete" => {
            let field = if command == "update" {
                "updates"
            } else {
                "deletes"
            };
            if let Some(Bson::Array(stmts)) = body.get_mut(field) {
                for s in stmts.iter_mut() {
                    if let Bson::Document(s) = s {
                        if case_insensitive(s.get("collation")) {
                            rewrite(s.get_mut("q"));
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// Whether `collation` compares strings ignoring case (strength 1 or 2).
fn case_insensitive(collation: Option<&Bson>) -> bool {
    let Some(Bson::Document(c)) = collation else {
        return false;
    };
    let strength = match c.get("strength") {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(f)) => *f as i64,
        _ => 3,
    };
    c.get_str("locale").is_ok_and(|l| l != "simple") && strength <= 2
}

fn rewrite(filter: Option<&mut Bson>) {
    if let Some(Bson::Document(f)) = filter {
        rewrite_doc(f);
    }
}

fn rewrite_doc(f: &mut Document) {
    for (k, v) in f.iter_mut() {
        match (k.as_str(), v) {
            ("$and" | "$or" | "$nor", Bson::Array(parts)) => {
                for p in parts.iter_mut() {
                    if let Bson::Document(p) = p {
                        rewrite_doc(p);
                    }
                }
            }
            (k, _) if k.starts_with('$') => {}
            (_, v @ Bson::String(_)) => *v = Bson::Document(bson::doc! {"$in": [pattern(v)]}),
            (_, Bson::Document(ops)) if ops.keys().all(|o| o.starts_with('$')) => {
                rewrite_operators(ops)
            }
            _ => {}
        }
    }
}

fn rewrite_operators(ops: &mut Document) {
    let mut out = Document::new();
    for (op, v) in std::mem::take(ops) {
        match (op.as_str(), v) {
            ("$eq", v @ Bson::String(_)) => {
                out.insert("$in", vec![pattern(&v)]);
            }
            ("$ne", v @ Bson::String(_)) => {
                out.insert("$nin", vec![pattern(&v)]);
            }
            ("$in" | "$nin", Bson::Array(items)) => {
                let items: Vec<Bson> = items
                    .iter()
                    .map(|x| {
                        if matches!(x, Bson::String(_)) {
                            pattern(x)
                        } else {
                            x.clone()
                        }
                    })
                    .collect();
                out.insert(op, items);
            }
            (_, v) => {
                out.insert(op, v);
            }
        }
    }
    *ops = out;
}

/// `^<s>$`, case-insensitive, with `s` matched literally.
fn pattern(s: &Bson) -> Bson {
    let text = s.as_str().unwrap_or_default();
    let mut p = String::with_capacity(text.len() + 2);
    p.push('^');
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('$');
    Bson::RegularExpression(Regex {
        pattern: p,
        options: "i".into(),
    })
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn strength_two_equality_ignores_case_and_strength_three_does_not() {
        let mut body = doc! {
            "delete": "c",
            "deletes": [
                {"q": {"x": "P.ng", "n": 1, "$or": [{"y": {"$ne": "a"}}]}, "limit": 1,
                 "collation": {"locale": "en_US", "strength": 2}},
                {"q": {"x": "PING"}, "limit": 1, "collation": {"locale": "en_US", "strength": 3}},
            ],
        };
        apply("delete", &mut body);
        let stmts = body.get_array("deletes").unwrap();
        let q = stmts[0].as_document().unwrap().get_document("q").unwrap();
        let re = |p: &str| {
            Bson::RegularExpression(Regex {
                pattern: p.into(),
                options: "i".into(),
            })
        };
        assert_eq!(
            q.get_document("x").unwrap(),
            &doc! {"$in": [re("^P\\.ng$")]}
        );
        assert_eq!(q.get_i32("n").unwrap(), 1);
        let or = q.get_array("$or").unwrap()[0]
            .as_document()
            .unwrap()
            .clone();
        assert_eq!(or, doc! {"y": {"$nin": [re("^a$")]}});
        let q = stmts[1].as_document().unwrap().get_document("q").unwrap();
        assert_eq!(q, &doc! {"x": "PING"});
    }
}
