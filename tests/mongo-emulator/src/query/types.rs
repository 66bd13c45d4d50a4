//! BSON type numbers and aliases as `$type` (query and expression) names them.

use bson::Bson;

/// The `$type` alias MongoDB uses for a value's type.
pub fn type_name(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::Undefined => "undefined",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Null => "null",
        Bson::RegularExpression(_) => "regex",
        Bson::DbPointer(_) => "dbPointer",
        Bson::JavaScriptCode(_) => "javascript",
        Bson::Symbol(_) => "symbol",
        Bson::JavaScriptCodeWithScope(_) => "javascriptWithScope",
        Bson::Int32(_) => "int",
        Bson::Timestamp(_) => "timestamp",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        Bson::MinKey => "minKey",
        Bson::MaxKey => "maxKey",
    }
}

/// The BSON type number of a value (MinKey -1, MaxKey 127).
pub fn type_number(v: &Bson) -> i32 {
    match v {
        Bson::MinKey => -1,
        Bson::MaxKey => 127,
        other => other.element_type() as i32,
    }
}

/// The type number for a `$type` alias; `"number"` maps to `None` inside `Some`.
pub fn alias_number(alias: &str) -> Option<Option<i32>> {
    let n = match alias {
        "double" => 1,
        "string" => 2,
        "object" => 3,
        "array" => 4,
        "binData" => 5,
        "undefined" => 6,
        "objectId" => 7,
        "bool" => 8,
        "date" => 9,
        "null" => 10,
        "regex" => 11,
        "dbPointer" => 12,
        "javascript" => 13,
        "symbol" => 14,
        "javascriptWithScope" => 15,
        "int" => 16,
        "timestamp" => 17,
        "long" => 18,
        "decimal" => 19,
        "minKey" => -1,
        "maxKey" => 127,
        "number" => return Some(None),
        _ => return None,
    };
    Some(Some(n))
}

/// Whether `n` is a valid BSON type number.
pub fn valid_type_number(n: i64) -> bool {
    (1..=19).contains(&n) || n == -1 || n == 127
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_agree_with_aliases() {
        for v in [
            Bson::Int32(1),
            Bson::Int64(1),
            Bson::Double(1.0),
            Bson::Null,
            Bson::MaxKey,
        ] {
            assert_eq!(alias_number(type_name(&v)), Some(Some(type_number(&v))));
        }
        assert_eq!(alias_number("number"), Some(None));
        assert_eq!(alias_number("missing"), None);
    }
}
