//! Node sets: ClusterShell's `NodeSet` syntax and semantics, in Rust.
//!
//! Every kiln command that takes nodes takes a node set (the README's
//! "Fanout commands"), written the way operators already write them for
//! `clush` and `nodeset`:
//! `n[1-100]`, `n[001-100]`, `n[1-100/2]`, `n[1-3,7]`, `r[1-4]-n[01-40]`,
//! groups `@name`, and the operators `,` (union), `!` (difference),
//! `&` (intersection) and `^` (symmetric difference), applied strictly left to
//! right as ClusterShell does (`a,b!a` is `b`).
//!
//! This folder depends on nothing of kiln and not on actix: its imports are
//! `std`, `thiserror` (for [`NodeSetError`]) and its own modules, so that it
//! can become a crate of its own. Keep it so.
//!
//! # Design
//!
//! A name is a pattern plus a tuple of indexes (`r12-n03` is `r%s-n%s` with
//! `12` and `03`), and an index is a digit string, not a number (`n1` and `n01`
//! are different nodes). A set stores, per pattern, a sorted flat vector of
//! index tuples; set algebra is linear merges of those; folding reproduces
//! `nodeset -f`, order included. Each module's documentation says why it is
//! shaped so:
//!
//! - `index`: a digit string as one `u64` ordinal in ClusterShell's order.
//! - `pattern`: a name split into its pattern and index tuple; the sorted
//!   tuples of one pattern.
//! - `set`: [`NodeSet`], its queries and conversions.
//! - `algebra`: union, intersection, difference, symmetric difference.
//! - `fold`: the folded text of a set (`RangeSet` runs; groups for `-r`).
//! - `fold_nd`: ClusterShell's `RangeSetND` merge for multi-dimensional
//!   patterns.
//! - `parse`: expressions: operators, groups, and the size limits.
//! - `operand`: one operand's text (bracket ranges and the digits around them).
//! - `error`: [`NodeSetError`], with the column it points at.
//!
//! # Differences from ClusterShell
//!
//! - Negative indexes (`n[-2-3]`) and non-ASCII digits are not supported; a
//!   digit run over 19 digits in a plain name is text, not an index.
//! - Node wildcards (`n*`), `@*` and `@@source` are not supported, and an unknown
//!   group is an error instead of an empty set.
//! - [`NodeSet::iter`] yields names sorted by pattern then by each index;
//!   ClusterShell follows its folded vectors for multi-dimensional sets.
//! - A set is refused above [`MAX_NODES`] names, or above
//!   [`INDEXES_PER_NAME`] × [`MAX_NODES`] indexes in all: each number of a
//!   name costs memory, so a set of names with many numbers (`a1b2c3d4…`) is
//!   refused sooner.

mod algebra;
mod error;
mod fold;
mod fold_nd;
mod index;
mod operand;
mod parse;
mod pattern;
mod set;
#[cfg(test)]
mod test_support;

pub use error::NodeSetError;
pub use parse::{INDEXES_PER_NAME, MAX_NODES, parse, parse_with};
pub use set::NodeSet;
