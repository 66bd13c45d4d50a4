//! Pure document logic of the emulator: BSON ordering, query matching, update operators,
//! projection, sort and the aggregation stages/expressions MongoDB clients use. No I/O,
//! no server state: the command layer calls into it. INTERFACE FROZEN (the server layer
//! is written against these signatures); implement behind them, add submodules freely.

mod arith;
mod compare;
mod convert;
mod diff;
pub mod positional;
pub use diff::UpdateDescription;
mod expr;
mod expr_extra;
mod fieldpath;
mod matcher;
mod path;
mod pipeline;
mod projection;
mod seed;
mod sort;
mod types;
mod update;

#[cfg(test)]
mod robustness_tests;

use std::cmp::Ordering;

use bson::{Bson, Document};

/// A MongoDB error: numeric code, code name, message (reply shape
/// `{ok: 0, errmsg, code, codeName}`).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryError {
    /// MongoDB error code (2 BadValue, 9 FailedToParse, 14 TypeMismatch, 40, 66…).
    pub code: i32,
    /// MongoDB code name, e.g. "BadValue".
    pub code_name: &'static str,
    /// errmsg as MongoDB words it.
    pub message: String,
}

impl QueryError {
    /// Build an error.
    pub fn new(code: i32, code_name: &'static str, message: impl Into<String>) -> Self {
        QueryError {
            code,
            code_name,
            message: message.into(),
        }
    }
    /// 2 BadValue.
    pub fn bad_value(message: impl Into<String>) -> Self {
        Self::new(2, "BadValue", message)
    }
}

/// What an update statement's `u` is.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateSpec {
    /// A replacement document (no `$` keys at top level).
    Replacement(Document),
    /// Update operators (`$set`, `$unset`, `$inc`, `$setOnInsert`, `$push`, `$pull`, …).
    Operators(Document),
    /// An aggregation pipeline (`$set`/`$addFields`, `$unset`, `$replaceWith`,
    /// `$replaceRoot`, `$project`).
    Pipeline(Vec<Document>),
}

impl UpdateSpec {
    /// [`UpdateSpec::parse`] of an owned `u`: a replacement or operator document is
    /// moved into the spec instead of cloned.
    pub fn parse_owned(u: Bson) -> Result<UpdateSpec, QueryError> {
        match u {
            Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => {
                let spec = UpdateSpec::Operators(d);
                update::validate(&spec)?;
                Ok(spec)
            }
            Bson::Document(d) if !d.keys().any(|k| k.starts_with('$')) => {
                Ok(UpdateSpec::Replacement(d))
            }
            other => UpdateSpec::parse(&other),
        }
    }

    /// Classify a `u` value from an update statement (document or array).
    /// Errors: mixed `$`/non-`$` keys, wrong type. Operator documents and pipelines are
    /// also validated here (unknown/empty modifier, conflicting paths, stages not allowed
    /// in an update), so a malformed update fails even when it matches no document.
    pub fn parse(u: &Bson) -> Result<UpdateSpec, QueryError> {
        match u {
            Bson::Array(stages) => {
                let mut out = Vec::with_capacity(stages.len());
                for st in stages {
                    match st {
                        Bson::Document(d) => out.push(d.clone()),
                        _ => {
                            return Err(QueryError::new(
                                14,
                                "TypeMismatch",
                                "Each element of the 'pipeline' array must be an object",
                            ))
                        }
                    }
                }
                let spec = UpdateSpec::Pipeline(out);
                update::validate(&spec)?;
                Ok(spec)
            }
            Bson::Document(d) => match d.keys().next() {
                Some(k) if k.starts_with('$') => {
                    let spec = UpdateSpec::Operators(d.clone());
                    update::validate(&spec)?;
                    Ok(spec)
                }
                _ => {
                    if let Some(k) = d.keys().find(|k| k.starts_with('$')) {
                        return Err(QueryError::new(
                            52,
                            "DollarPrefixedFieldName",
                            format!(
                                "The dollar ($) prefixed field '{k}' in '{k}' is not allowed in the \
                                 context of an update's replacement document. Consider using an \
                                 aggregation pipeline with $replaceWith."
                            ),
                        ));
                    }
                    Ok(UpdateSpec::Replacement(d.clone()))
                }
            },
            _ => Err(QueryError::new(
                14,
                "TypeMismatch",
                "Update argument must be either an object or an array",
            )),
        }
    }
}

/// Compare two BSON values in MongoDB's comparison/sort order (MinKey < null < numbers
/// < string < object < array < binary < ObjectId < bool < date < timestamp < regex <
/// MaxKey; numbers by value across types).
pub fn compare(a: &Bson, b: &Bson) -> Ordering {
    compare::compare(a, b)
}

/// Whether `doc` matches the query `filter` (`$eq $ne $gt $gte $lt $lte $in $nin
/// $exists $type $and $or $nor $not $regex $size $all $elemMatch`, dotted paths, array
/// element matching, `$expr` optional). Unknown operator → 2 BadValue
/// "unknown operator: $foo"; malformed operand → 2 BadValue.
pub fn matches(doc: &Document, filter: &Document) -> Result<bool, QueryError> {
    matcher::eval(&matcher::parse(filter)?, doc)
}

/// A filter parsed once for matching many documents (same semantics as [`matches`];
/// added next to the frozen API so a scan does not re-parse the filter and recompile
/// its regexes for every document).
#[derive(Debug, Clone)]
pub struct Filter {
    /// The parsed filter tree.
    node: matcher::Node,
}

impl Filter {
    /// Parse and validate `filter`.
    pub fn new(filter: &Document) -> Result<Filter, QueryError> {
        Ok(Filter {
            node: matcher::parse(filter)?,
        })
    }

    /// Whether `doc` matches.
    pub fn matches(&self, doc: &Document) -> Result<bool, QueryError> {
        matcher::eval(&self.node, doc)
    }
}

/// Check a filter for errors without a document (so an invalid filter on an empty
/// collection still errors, like MongoDB).
pub fn validate_filter(filter: &Document) -> Result<(), QueryError> {
    matcher::parse(filter).map(|_| ())
}

/// The document an upsert starts from: the equality fields of `filter` (`{a: 1}`,
/// `{a: {$eq: 1}}`, dotted paths expanded, fields under `$and`), per MongoDB.
pub fn upsert_seed(filter: &Document) -> Result<Document, QueryError> {
    seed::upsert_seed(filter)
}

/// Apply `update` to `doc`, returning the new document. `is_upsert_insert` is true when
/// the document is being created by an upsert (then `$setOnInsert` applies).
/// Keeps `_id` first and immutable (66 ImmutableField when changed). A replacement keeps
/// the existing `_id`. Field order follows MongoDB (`$set` of a new field appends).
pub fn apply_update(
    doc: &Document,
    update: &UpdateSpec,
    is_upsert_insert: bool,
) -> Result<Document, QueryError> {
    update::apply(doc, update, is_upsert_insert)
}

/// [`apply_update`] consuming `update` (an upsert's insert uses it once: a replacement
/// is then moved into the new document instead of cloned).
pub fn apply_update_owned(
    doc: &Document,
    update: UpdateSpec,
    is_upsert_insert: bool,
) -> Result<Document, QueryError> {
    update::apply_owned(doc, update, is_upsert_insert)
}

/// Apply a find `projection` (inclusion or exclusion, `_id` rules, dotted paths,
/// `$slice`/`$elemMatch` optional). Mixed inclusion/exclusion → 31254-style error.
pub fn project(doc: &Document, projection: &Document) -> Result<Document, QueryError> {
    projection::project(doc, projection)
}

/// Sort documents by a sort spec (`{a: 1, b: -1}`; arrays sort by min/max element as
/// MongoDB does). Stable.
pub fn sort_documents(docs: &mut [Document], sort: &Document) -> Result<(), QueryError> {
    sort::sort_documents(docs, sort)
}

/// Run aggregation stages over `docs` (already the collection's documents in natural
/// order): `$match $project $addFields $set $unset $sort $skip $limit $count $group`
/// (accumulators `$sum $avg $min $max $first $last $push` at least) `$replaceRoot
/// $replaceWith`. Unknown stage → 40324 "Unrecognized pipeline stage name: '$foo'".
pub fn run_pipeline(docs: Vec<Document>, stages: &[Document]) -> Result<Vec<Document>, QueryError> {
    pipeline::run(docs, stages)
}

/// Evaluate an aggregation expression against `root` (`$$ROOT`, `"$field.path"`,
/// literals, `$literal`, arithmetic, comparison `$eq $ne $gt $gte $lt $lte $cmp`,
/// boolean `$and $or $not`, `$cond`, `$ifNull`, `$type`, `$mergeObjects`, `$concat`…).
pub fn eval_expression(expr: &Bson, root: &Document) -> Result<Bson, QueryError> {
    Ok(expr::eval_opt(expr, root)?.unwrap_or(Bson::Null))
}

/// The `updateDescription` of a change event for an update from `before` to `after`:
/// updated and removed fields with top-level (or dotted, for nested changes) paths,
/// truncated arrays and disambiguated paths, as MongoDB reports them.
pub fn update_description(before: &Document, after: &Document) -> diff::UpdateDescription {
    diff::update_description(before, after)
}
