//! Pair filters: read from a TOML inline table or an Extended JSON string, and checked
//! against the query operators both MongoDB (in a `find` filter) and the project's
//! MongoDB emulator (tests/mongo-emulator/src/query/matcher.rs) implement. A filter the
//! emulator cannot evaluate would make tests and production disagree, so it is a
//! configuration error rather than a silent mismatch.

use bson::{Bson, Document};

use super::raw::RawFilter;

/// Operators allowed where a field name could stand (`{$or: […]}`).
pub const TOP_LEVEL_OPERATORS: &[&str] = &["$and", "$or", "$nor", "$expr", "$comment"];

/// Operators allowed on a field (`{n: {$gte: 3}}`). The emulator also refuses the geo
/// and bit-test operators, `$where`, `$text` and `$jsonSchema`, so they are absent.
pub const FIELD_OPERATORS: &[&str] = &[
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$exists",
    "$type",
    "$regex",
    "$options",
    "$size",
    "$all",
    "$elemMatch",
    "$mod",
    "$not",
];

/// Aggregation operators allowed inside `$expr` (the emulator's expression evaluator,
/// less `$rand`: a filter must give the same answer on every read).
pub const EXPR_OPERATORS: &[&str] = &[
    "$literal",
    "$add",
    "$subtract",
    "$multiply",
    "$divide",
    "$mod",
    "$abs",
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$cmp",
    "$and",
    "$or",
    "$not",
    "$cond",
    "$ifNull",
    "$type",
    "$mergeObjects",
    "$concat",
    "$toString",
    "$size",
    "$in",
    "$arrayElemAt",
    "$max",
    "$min",
    "$sum",
    "$avg",
    "$toLower",
    "$toUpper",
    "$isArray",
    "$toInt",
    "$toLong",
    "$toDouble",
    "$toBool",
    "$getField",
    "$switch",
    "$setField",
    "$concatArrays",
    "$slice",
    "$reverseArray",
    "$objectToArray",
    "$arrayToObject",
    "$split",
    "$substrCP",
    "$substr",
    "$strLenCP",
];

/// The filter as a BSON document (Extended JSON keys such as `$date` are understood in
/// both forms). A TOML inline table reaches us with its keys sorted (figment keeps
/// tables as sorted maps); a JSON string keeps the order written.
pub fn parse_filter(raw: &RawFilter) -> Result<Document, String> {
    let value = match raw {
        RawFilter::Json(text) => {
            let value = serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| format!("not valid JSON: {e}"))?;
            if value.is_object() {
                // Read again straight into BSON: keeps the keys in the order written
                // (a `serde_json::Value` sorts them, and embedded-document equality
                // in MongoDB depends on the order).
                if let Ok(Bson::Document(d)) = serde_json::from_str::<Bson>(text) {
                    return Ok(d);
                }
            }
            value
        }
        RawFilter::Table(map) => serde_json::Value::Object(map.clone()),
    };
    if !value.is_object() {
        return Err(format!(
            "must be a query document like {{ tenantId = \"edge-7\" }}, got {value}"
        ));
    }
    match Bson::try_from(value) {
        Ok(Bson::Document(d)) => Ok(d),
        Ok(other) => Err(format!("must be a query document, got {other}")),
        Err(e) => Err(format!("invalid Extended JSON: {e}")),
    }
}

/// The filter as relaxed Extended JSON (what `check-config` prints; reads back with
/// [`parse_filter`]).
pub fn to_extended_json(filter: &Document) -> String {
    Bson::Document(filter.clone())
        .into_relaxed_extjson()
        .to_string()
}

/// Refuse a filter using an operator outside [`TOP_LEVEL_OPERATORS`],
/// [`FIELD_OPERATORS`] and (inside `$expr`) [`EXPR_OPERATORS`]; the message names it.
pub fn check_filter(filter: &Document) -> Result<(), String> {
    for (key, value) in filter {
        if key.starts_with('$') {
            check_top_level(key, value)?;
        } else {
            check_field(key, value)?;
        }
    }
    Ok(())
}

fn check_top_level(op: &str, value: &Bson) -> Result<(), String> {
    match op {
        "$and" | "$or" | "$nor" => {
            let Bson::Array(items) = value else {
                return Err(format!("operator `{op}` needs an array of query documents"));
            };
            if items.is_empty() {
                return Err(format!("operator `{op}` needs a non-empty array"));
            }
            for item in items {
                let Bson::Document(d) = item else {
                    return Err(format!("operator `{op}` needs an array of query documents"));
                };
                check_filter(d)?;
            }
            Ok(())
        }
        "$expr" => check_expr(value),
        "$comment" => Ok(()),
        _ => Err(format!(
            "operator `{op}` is not supported in a filter (supported: {}; on a field: {})",
            TOP_LEVEL_OPERATORS.join(", "),
            FIELD_OPERATORS.join(", ")
        )),
    }
}

/// Whether `d` is `{$op: …}` rather than a literal document (DBRef keys are literal).
fn is_operator_doc(d: &Document) -> bool {
    d.keys()
        .next()
        .is_some_and(|k| k.starts_with('$') && !matches!(k.as_str(), "$ref" | "$id" | "$db"))
}

fn check_field(field: &str, value: &Bson) -> Result<(), String> {
    let Bson::Document(ops) = value else {
        return Ok(());
    };
    if !is_operator_doc(ops) {
        return Ok(());
    }
    for (op, arg) in ops {
        if !FIELD_OPERATORS.contains(&op.as_str()) {
            return Err(format!(
                "operator `{op}` on field `{field}` is not supported in a filter \
                 (supported on a field: {})",
                FIELD_OPERATORS.join(", ")
            ));
        }
        match (op.as_str(), arg) {
            ("$not", Bson::Document(d)) if is_operator_doc(d) => check_field(field, arg)?,
            ("$not", Bson::RegularExpression(_)) => {}
            ("$not", _) => {
                return Err(format!(
                    "operator `$not` on field `{field}` needs an operator document or a regex"
                ))
            }
            ("$elemMatch", Bson::Document(d)) if is_operator_doc(d) => check_field(field, arg)?,
            ("$elemMatch", Bson::Document(d)) => check_filter(d)?,
            ("$elemMatch", _) => {
                return Err(format!(
                    "operator `$elemMatch` on field `{field}` needs a document"
                ))
            }
            ("$in" | "$nin" | "$all", Bson::Array(items)) => {
                for item in items {
                    match item {
                        Bson::Document(d) if op == "$all" && is_operator_doc(d) => {
                            check_field(field, item)?
                        }
                        Bson::Document(d) if is_operator_doc(d) => {
                            return Err(format!(
                                "operator `{op}` on field `{field}` cannot hold operators"
                            ))
                        }
                        _ => {}
                    }
                }
            }
            ("$in" | "$nin" | "$all", _) => {
                return Err(format!("operator `{op}` on field `{field}` needs an array"))
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_expr(value: &Bson) -> Result<(), String> {
    match value {
        Bson::Document(d) => {
            for (k, v) in d {
                if k.starts_with('$') {
                    if !EXPR_OPERATORS.contains(&k.as_str()) {
                        return Err(format!(
                            "expression operator `{k}` inside `$expr` is not supported in a \
                             filter (supported: {})",
                            EXPR_OPERATORS.join(", ")
                        ));
                    }
                    if k == "$literal" {
                        continue;
                    }
                }
                check_expr(v)?;
            }
            Ok(())
        }
        Bson::Array(items) => items.iter().try_for_each(check_expr),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn supported_operators_pass_at_every_depth() {
        let f = doc! {
            "tenantId": "edge-7",
            "n": {"$gte": 3, "$lt": 10},
            "tags": {"$all": [{"$elemMatch": {"$eq": "a"}}], "$size": 2},
            "$or": [{"a": {"$exists": true}}, {"b": {"$not": {"$in": [1, 2]}}}],
            "items": {"$elemMatch": {"sku": "x", "qty": {"$gt": 0}}},
            "$expr": {"$gt": ["$qty", {"$add": ["$min", 1]}]},
            "ref": {"$ref": "c", "$id": 1},
            "$comment": "edge slice",
        };
        assert_eq!(check_filter(&f), Ok(()));
    }

    #[test]
    fn unsupported_operators_are_named() {
        for (f, op) in [
            (doc! {"$where": "this.a > 1"}, "$where"),
            (doc! {"$text": {"$search": "x"}}, "$text"),
            (doc! {"loc": {"$near": [0, 0]}}, "$near"),
            (doc! {"a": {"$foo": 1}}, "$foo"),
            (doc! {"$and": [{"a": {"$bitsAllSet": 1}}]}, "$bitsAllSet"),
            (doc! {"a": {"$not": {"$where": 1}}}, "$where"),
            (doc! {"$expr": {"$rand": {}}}, "$rand"),
            (doc! {"$expr": {"$dateAdd": {}}}, "$dateAdd"),
            (doc! {"$jsonSchema": {}}, "$jsonSchema"),
        ] {
            let e = check_filter(&f).unwrap_err();
            assert!(e.contains(&format!("`{op}`")), "{op}: {e}");
        }
    }

    #[test]
    fn json_and_table_filters_read_to_documents() {
        let json = parse_filter(&RawFilter::Json(
            r#"{"tenantId": "edge-7", "n": {"$gte": 3}}"#.into(),
        ))
        .unwrap();
        let serde_json::Value::Object(map) =
            serde_json::json!({"tenantId": "edge-7", "n": {"$gte": 3}})
        else {
            unreachable!()
        };
        assert_eq!(
            parse_filter(&RawFilter::Table(map)).unwrap(),
            doc! {"n": {"$gte": 3}, "tenantId": "edge-7"}
        );
        // The JSON string keeps its key order.
        assert_eq!(json, doc! {"tenantId": "edge-7", "n": {"$gte": 3}});
        let back = parse_filter(&RawFilter::Json(to_extended_json(&json))).unwrap();
        assert_eq!(back, json);
        assert!(parse_filter(&RawFilter::Json("[1]".into())).is_err());
        assert!(parse_filter(&RawFilter::Json("{".into())).is_err());
    }
}
