//! Range scans by `_id`: the lower bound a filter puts on `_id`, so a `find` sorted by
//! `_id` with a limit (how sync tools page through a collection: `{_id: {$gt: last}}`,
//! possibly `$or`-ed with later type brackets) walks the ordered map from that bound and
//! stops at the limit instead of matching and sorting the whole collection per page.

use bson::oid::ObjectId;
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Document, Regex, Timestamp};

/// Rank of a `$type` alias's bracket in the sort order, with the bracket's smallest
/// value when we construct it (`None` for the brackets sorting after `regex` whose
/// minimum we do not build: such a bracket can still be passed over when a lower one is
/// also listed). `None` for aliases we do not rank (then no bound is used).
fn bracket_min(alias: &Bson) -> Option<(u8, Option<Bson>)> {
    let name = match alias {
        Bson::String(s) => s.as_str(),
        Bson::Int32(n) => match n {
            -1 => "minKey",
            1 | 16 | 18 | 19 => "number",
            2 | 14 => "string",
            3 => "object",
            4 => "array",
            5 => "binData",
            7 => "objectId",
            8 => "bool",
            9 => "date",
            10 => "null",
            11 => "regex",
            12 => "dbPointer",
            13 => "javascript",
            15 => "javascriptWithScope",
            17 => "timestamp",
            127 => "maxKey",
            _ => return None,
        },
        _ => return None,
    };
    Some(match name {
        "minKey" => (0, Some(Bson::MinKey)),
        "null" => (2, Some(Bson::Null)),
        "double" | "int" | "long" | "decimal" | "number" => (3, Some(Bson::Double(f64::NAN))),
        "string" | "symbol" => (4, Some(Bson::String(String::new()))),
        "object" => (5, Some(Bson::Document(Document::new()))),
        "array" => (6, Some(Bson::Array(Vec::new()))),
        "binData" => (
            7,
            Some(Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: Vec::new(),
            })),
        ),
        "objectId" => (8, Some(Bson::ObjectId(ObjectId::from_bytes([0; 12])))),
        "bool" => (9, Some(Bson::Boolean(false))),
        "date" => (10, Some(Bson::DateTime(DateTime::MIN))),
        "timestamp" => (
            11,
            Some(Bson::Timestamp(Timestamp {
                time: 0,
                increment: 0,
            })),
        ),
        "regex" => (
            12,
            Some(Bson::RegularExpression(Regex {
                pattern: String::new(),
                options: String::new(),
            })),
        ),
        "dbPointer" => (13, None),
        "javascript" => (14, None),
        "javascriptWithScope" => (15, None),
        "maxKey" => (99, Some(Bson::MaxKey)),
        _ => return None,
    })
}

fn min_of(a: Bson, b: Bson) -> Bson {
    if crate::query::compare(&a, &b).is_le() {
        a
    } else {
        b
    }
}

fn max_of(a: Bson, b: Bson) -> Bson {
    if crate::query::compare(&a, &b).is_ge() {
        a
    } else {
        b
    }
}

/// Lower bound from one `_id` condition (`{$gt: v}`, `{$gte: v}`, `{$type: …}`).
fn id_condition_bound(cond: &Bson) -> Option<Bson> {
    let Bson::Document(ops) = cond else {
        return None;
    };
    let mut bound: Option<Bson> = None;
    for (op, v) in ops {
        let b = match op.as_str() {
            "$gt" | "$gte" => match v {
                Bson::Document(_) | Bson::Array(_) | Bson::RegularExpression(_) => None,
                v => Some(v.clone()),
            },
            "$type" => {
                let aliases: Vec<&Bson> = match v {
                    Bson::Array(a) => a.iter().collect(),
                    v => vec![v],
                };
                let mut best: Option<(u8, Option<Bson>)> = None;
                let mut all_known = true;
                for a in aliases {
                    match bracket_min(a) {
                        Some(m) if best.as_ref().is_none_or(|b| m.0 < b.0) => best = Some(m),
                        Some(_) => {}
                        None => all_known = false,
                    }
                }
                // An unknown alias might sort below the known ones: no bound then.
                best.filter(|_| all_known).and_then(|(_, v)| v)
            }
            _ => None,
        };
        if let Some(b) = b {
            bound = Some(match bound {
                Some(prev) => max_of(prev, b),
                None => b,
            });
        }
    }
    bound
}

/// An inclusive lower bound on the `_id` of every document matching `filter`, when the
/// filter gives one simply; `None` means "scan from the start".
pub fn id_lower_bound(filter: &Document) -> Option<Bson> {
    let mut bound: Option<Bson> = None;
    let mut tighten = |b: Bson| {
        bound = Some(match bound.take() {
            Some(prev) => max_of(prev, b),
            None => b,
        })
    };
    for (k, v) in filter {
        match (k.as_str(), v) {
            ("_id", cond) => {
                if let Some(b) = id_condition_bound(cond) {
                    tighten(b)
                }
            }
            ("$and", Bson::Array(parts)) => {
                for p in parts {
                    if let Some(b) = p.as_document().and_then(id_lower_bound) {
                        tighten(b)
                    }
                }
            }
            ("$or", Bson::Array(parts)) if !parts.is_empty() => {
                let mut low: Option<Bson> = None;
                let mut all = true;
                for p in parts {
                    match p.as_document().and_then(id_lower_bound) {
                        Some(b) => low = Some(low.map_or(b.clone(), |l| min_of(l, b))),
                        None => all = false,
                    }
                }
                if let (true, Some(l)) = (all, low) {
                    tighten(l)
                }
            }
            _ => {}
        }
    }
    bound
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bson::doc;

    /// `$type` names of every bracket sorting after numbers, as a keyset scan after an
    /// integer key lists them (see datasync's scan_filter).
    pub(crate) const LATER_THAN_NUMBERS: [&str; 14] = [
        "string",
        "symbol",
        "object",
        "array",
        "binData",
        "objectId",
        "bool",
        "date",
        "timestamp",
        "regex",
        "dbPointer",
        "javascript",
        "javascriptWithScope",
        "maxKey",
    ];

    #[test]
    fn gt_gives_its_value() {
        assert_eq!(
            id_lower_bound(&doc! {"_id": {"$gt": 5}}),
            Some(Bson::Int32(5))
        );
    }

    #[test]
    fn or_of_gt_and_later_types_is_the_gt_value() {
        let f = doc! {"$or": [{"_id": {"$gt": "m"}}, {"_id": {"$type": ["object", "objectId"]}}]};
        assert_eq!(id_lower_bound(&f), Some(Bson::String("m".into())));
    }

    #[test]
    fn or_with_an_unbounded_branch_has_no_bound() {
        let f = doc! {"$or": [{"_id": {"$gt": 1}}, {"name": "x"}]};
        assert_eq!(id_lower_bound(&f), None);
    }

    #[test]
    fn later_brackets_of_a_keyset_scan_keep_the_bound() {
        // What a sync tool sends after an integer key (see datasync's scan_filter): every
        // bracket after numbers, including the ones whose minimum we do not build.
        let later = LATER_THAN_NUMBERS;
        let f = doc! {"$or": [{"_id": {"$gt": 5}}, {"_id": {"$type": later.to_vec()}}]};
        assert_eq!(id_lower_bound(&f), Some(Bson::Int32(5)));
        assert_eq!(
            id_lower_bound(&doc! {"_id": {"$type": ["javascript", "maxKey"]}}),
            None
        );
        assert_eq!(
            id_lower_bound(&doc! {"_id": {"$type": [13, 2]}}),
            Some(Bson::String(String::new()))
        );
    }

    #[test]
    fn unknown_type_alias_disables_the_bound() {
        assert_eq!(
            id_lower_bound(&doc! {"_id": {"$type": ["undefined", "string"]}}),
            None
        );
        assert_eq!(
            id_lower_bound(&doc! {"_id": {"$type": "string"}}),
            Some(Bson::String(String::new()))
        );
    }
}
