//! The filter for "every `_id` after K" in MongoDB's sort order. A plain
//! `{_id: {$gt: K}}` only matches values in K's type bracket (a string never compares
//! greater than a number), so a keyset scan over mixed `_id` types would stop at the
//! end of the first bracket. Adding the brackets that sort after K's with `$type`
//! keeps the scan going in exactly the order of `sort({_id: 1})`.

use bson::{doc, Bson, Document};

/// BSON types in MongoDB's comparison order, grouped by bracket (types in one bracket
/// compare by value with each other). `$type` aliases as the server spells them.
const BRACKETS: &[&[&str]] = &[
    &["minKey"],
    &["undefined"],
    &["null"],
    &["double", "int", "long", "decimal"],
    &["string", "symbol"],
    &["object"],
    &["array"],
    &["binData"],
    &["objectId"],
    &["bool"],
    &["date"],
    &["timestamp"],
    &["regex"],
    &["dbPointer"],
    &["javascript"],
    &["javascriptWithScope"],
    &["maxKey"],
];

/// Index in [`BRACKETS`] of the bracket `value` belongs to.
fn bracket_of(value: &Bson) -> usize {
    let alias = match value {
        Bson::MinKey => "minKey",
        Bson::Undefined => "undefined",
        Bson::Null => "null",
        Bson::Double(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Decimal128(_) => "double",
        Bson::String(_) | Bson::Symbol(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Timestamp(_) => "timestamp",
        Bson::RegularExpression(_) => "regex",
        Bson::DbPointer(_) => "dbPointer",
        Bson::JavaScriptCode(_) => "javascript",
        Bson::JavaScriptCodeWithScope(_) => "javascriptWithScope",
        Bson::MaxKey => "maxKey",
    };
    BRACKETS
        .iter()
        .position(|b| b.contains(&alias))
        .expect("every alias above is listed in BRACKETS")
}

/// `$type` aliases of every bracket sorting strictly after `value`'s.
pub fn types_after(value: &Bson) -> Vec<&'static str> {
    BRACKETS[bracket_of(value) + 1..]
        .iter()
        .flat_map(|b| b.iter().copied())
        .collect()
}

/// Filter matching every document whose `_id` sorts strictly after `after`
/// (all documents when `None`).
pub fn after_filter(after: Option<&Bson>) -> Document {
    let Some(k) = after else {
        return Document::new();
    };
    let later = types_after(k);
    if later.is_empty() {
        return doc! { "_id": { "$gt": k.clone() } };
    }
    doc! {
        "$or": [
            { "_id": { "$gt": k.clone() } },
            { "_id": { "$type": later } },
        ]
    }
}

#[cfg(test)]
mod tests {
    use bson::oid::ObjectId;
    use bson::{Binary, DateTime};

    use super::*;

    #[test]
    fn no_lower_bound_matches_everything() {
        assert_eq!(after_filter(None), Document::new());
    }

    #[test]
    fn numeric_key_also_matches_every_later_bracket() {
        let f = after_filter(Some(&Bson::Int32(5)));
        assert_eq!(
            f,
            doc! {"$or": [
                {"_id": {"$gt": 5}},
                {"_id": {"$type": [
                    "string", "symbol", "object", "array", "binData", "objectId", "bool",
                    "date", "timestamp", "regex", "dbPointer", "javascript",
                    "javascriptWithScope", "maxKey"
                ]}},
            ]}
        );
    }

    #[test]
    fn numbers_of_any_width_share_one_bracket() {
        let int = types_after(&Bson::Int32(1));
        assert_eq!(int, types_after(&Bson::Int64(1)));
        assert_eq!(int, types_after(&Bson::Double(1.5)));
        assert!(!int.contains(&"long") && !int.contains(&"double"));
    }

    #[test]
    fn string_key_excludes_numbers_and_symbols() {
        let later = types_after(&Bson::String("m".into()));
        assert_eq!(later[0], "object");
        for t in [
            "int", "long", "double", "decimal", "string", "symbol", "null",
        ] {
            assert!(!later.contains(&t), "{t}");
        }
    }

    #[test]
    fn later_brackets_follow_mongodb_order() {
        let ordered = [
            Bson::MinKey,
            Bson::Null,
            Bson::Int32(0),
            Bson::String("a".into()),
            Bson::Document(doc! {"a": 1}),
            Bson::Binary(Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: vec![1],
            }),
            Bson::ObjectId(ObjectId::new()),
            Bson::Boolean(true),
            Bson::DateTime(DateTime::now()),
            Bson::Timestamp(bson::Timestamp {
                time: 1,
                increment: 1,
            }),
            Bson::MaxKey,
        ];
        for pair in ordered.windows(2) {
            let (lo, hi) = (&pair[0], &pair[1]);
            assert!(bracket_of(lo) < bracket_of(hi), "{lo:?} < {hi:?}");
            assert!(types_after(hi).len() < types_after(lo).len());
        }
    }

    #[test]
    fn max_key_has_nothing_after_it() {
        assert!(types_after(&Bson::MaxKey).is_empty());
        assert_eq!(
            after_filter(Some(&Bson::MaxKey)),
            doc! {"_id": {"$gt": Bson::MaxKey}}
        );
    }

    #[test]
    fn object_id_key_continues_with_bool_and_date() {
        let later = types_after(&Bson::ObjectId(ObjectId::new()));
        assert_eq!(&later[..3], &["bool", "date", "timestamp"]);
    }
}
