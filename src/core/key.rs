//! MongoDB's ordering of BSON values, so keys sort the way the server sorts `_id`
//! (numbers by value across int/long/double, then strings, objects, arrays, binary,
//! ObjectId, bool, date…). The merge-join of a full reconcile depends on it.

use std::cmp::Ordering;
use std::hash::Hasher;

use bson::Bson;

/// Compare two BSON values in MongoDB's sort order.
pub fn compare_bson(a: &Bson, b: &Bson) -> Ordering {
    let _ = (a, b);
    todo!("core helper implements")
}

/// Hash consistent with [`compare_bson`] equality (e.g. `1_i32`, `1_i64` and `1.0`
/// hash alike).
pub fn hash_bson<H: Hasher>(value: &Bson, state: &mut H) {
    let _ = (value, state);
    todo!("core helper implements")
}
