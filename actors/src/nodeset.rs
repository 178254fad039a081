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
//! # Design
//!
//! **A name is a pattern plus a tuple of indexes.** `r12-n03` is the pattern
//! `r%s-n%s` with the indexes `12` and `03`. Every maximal run of ASCII digits
//! is one dimension. A set stores, per pattern, a sorted flat vector of index
//! tuples: 100,000 names of one pattern cost 800 KB per dimension and no
//! per-name allocation, and union, intersection and differences are linear
//! merges of sorted runs.
//!
//! **An index is a digit string, not a number.** `n1` and `n01` are different
//! nodes, and ClusterShell (1.9 and later) keeps both apart in one range set
//! (`n[1,01]`). Each digit string is encoded as one `u64` *ordinal*
//! `offset(width) + value`, which orders indexes the way ClusterShell sorts
//! them: shorter strings first, then by value (`9 < 08 < 10 < 001`). Digit runs
//! are limited to 19 digits so that the ordinal fits a `u64`; a longer run in a
//! plain name is kept as literal text, one in a bracket range is an error.
//!
//! **Digits next to a bracket join its range**, rewritten as ClusterShell
//! does: trailing digits are appended to each bound with a matching step
//! (`n[1-2]0` is `n[10-20/10]`), leading digits are prefixed to the bounds of
//! each contiguous run (`n1[0-20]` is `n[10-120]`, and `n0[1-10]` is the invalid
//! `n[01-010]`).
//!
//! **Folding reproduces `nodeset -f`**, and was checked against ClusterShell
//! 1.10.1 on tens of thousands of random expressions and sets. Patterns come in
//! the order of ClusterShell's format strings (`n` < `n%s` < `n%s-ipmi` <
//! `node%s`). One-dimensional sets fold as ClusterShell's `RangeSet` does:
//! runs of consecutive values broken by padding changes (`n[9,08-10]`), steps
//! never written (its `autostep` is off by default). A multi-dimensional set
//! that is a full cartesian product folds to that product (`r[1-4]-n[01-40]`).
//! Any other one is folded by ClusterShell's own `RangeSetND` merge: sort the
//! vectors, merge neighbours that differ in one dimension, then all pairs,
//! repeated until nothing changes. That is not simply "fold the last axis, then
//! merge equal ranges": `a1b1,a2b1,a2b2` folds to `a[1-2]b1,a2b2`. The output
//! matches ClusterShell's, order included. ClusterShell's all-pairs pass is
//! quadratic (hundreds of seconds on 10,000 scattered 2-D names); here each
//! vector finds its partners through a sorted index keyed by a hash of "all
//! dimensions but one", which yields the same partner in the same order, so the
//! same result comes in milliseconds.
//!
//! **Parsing never panics and never explodes.** Every error says what is wrong
//! and the 1-based column (in characters) of the offending character. A range or
//! a product is counted before it is expanded, and a set over [`MAX_NODES`]
//! names is refused. Runs of unions and of differences are merged together,
//! pairwise in rounds, so a 10,000-term folded set parses in milliseconds. Groups are resolved
//! through a caller-supplied function, each group once per parse, and a group
//! that includes itself is an error rather than a stack overflow.
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

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::str::FromStr;

/// Largest number of names a node set may hold; parsing a larger one fails
/// with [`NodeSetError::TooLarge`] before it allocates.
pub const MAX_NODES: usize = 10_000_000;

/// Indexes (numbers in names) a set may hold per name of [`MAX_NODES`], on
/// average: 10 million names of up to 3 numbers each, or fewer names with
/// more. Without it a 60-character expression (`n[1-9999999]x1x2…x9`) built a
/// set of 2 GB (found by the `nodeset` fuzz target).
pub const INDEXES_PER_NAME: usize = 3;

/// Longest digit run that is an index (its ordinal must fit in a `u64`).
const MAX_DIGITS: usize = 19;

/// Deepest nesting of groups inside group definitions.
const MAX_GROUP_DEPTH: usize = 64;

/// What can be wrong with a node set expression. Columns are 1-based and count
/// characters of the expression that was parsed (for [`NodeSetError::InGroup`],
/// of the group's definition).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeSetError {
    #[error("unbalanced '[' at column {column}: it has no matching ']'")]
    UnclosedBracket { column: usize },
    #[error("unbalanced ']' at column {column}: it has no matching '['")]
    UnopenedBracket { column: usize },
    #[error("'[' inside a bracket range at column {column}: ranges do not nest")]
    NestedBracket { column: usize },
    #[error(
        "second bracket range in one number at column {column}: write a single range, \
         e.g. n[10-12] rather than n[1][0-2]"
    )]
    AdjacentBrackets { column: usize },
    #[error("missing node set next to '{op}' at column {column}")]
    MissingOperand { op: char, column: usize },
    #[error("empty range at column {column}")]
    EmptyRange { column: usize },
    #[error(
        "invalid range '{text}' at column {column}: expected N, A-B or A-B/STEP \
         with decimal numbers"
    )]
    InvalidRange { text: String, column: usize },
    #[error("invalid range {text} at column {column}: the start is greater than the end")]
    ReversedRange { text: String, column: usize },
    #[error(
        "invalid step in '{text}' at column {column}: a step is a whole number of \
         at least 1 after a range A-B"
    )]
    InvalidStep { text: String, column: usize },
    #[error(
        "padding mismatch in '{text}' at column {column}: both ends of a zero-padded \
         range need the same width, e.g. 01-10"
    )]
    PaddingMismatch { text: String, column: usize },
    #[error("negative index in '{text}' at column {column}: indexes are not negative")]
    NegativeIndex { text: String, column: usize },
    #[error(
        "digits after a stepped range at column {column}: write the step inside \
         the brackets, e.g. n[10-60/20] rather than n[1-6/2]0"
    )]
    StepWithTrailingDigits { column: usize },
    #[error("number too long at column {column}: an index has at most 19 digits")]
    NumberTooLarge { column: usize },
    #[error(
        "node set too large at column {column}: more than {limit} names, or names with more \
         than {} numbers in all",
        limit.saturating_mul(INDEXES_PER_NAME)
    )]
    TooLarge { limit: usize, column: usize },
    #[error("unknown group @{name} at column {column}")]
    UnknownGroup { name: String, column: usize },
    #[error("group @{name} at column {column} includes itself")]
    GroupCycle { name: String, column: usize },
    #[error("group @{name} at column {column} nests groups more than {limit} deep")]
    GroupTooDeep { name: String, column: usize, limit: usize },
    #[error("invalid definition of group @{name}")]
    InGroup {
        name: String,
        #[source]
        source: Box<NodeSetError>,
    },
}

impl NodeSetError {
    /// The 1-based column the error points at, if it points into the parsed
    /// expression itself (not into a group's definition).
    pub fn column(&self) -> Option<usize> {
        use NodeSetError::*;
        match self {
            UnclosedBracket { column }
            | UnopenedBracket { column }
            | NestedBracket { column }
            | AdjacentBrackets { column }
            | MissingOperand { column, .. }
            | EmptyRange { column }
            | InvalidRange { column, .. }
            | ReversedRange { column, .. }
            | InvalidStep { column, .. }
            | PaddingMismatch { column, .. }
            | NegativeIndex { column, .. }
            | StepWithTrailingDigits { column }
            | NumberTooLarge { column }
            | TooLarge { column, .. }
            | UnknownGroup { column, .. }
            | GroupCycle { column, .. }
            | GroupTooDeep { column, .. } => Some(*column),
            InGroup { .. } => None,
        }
    }
}

/// Parses a node set expression that uses no groups.
///
/// # Errors
///
/// A [`NodeSetError`] naming the problem and its column; `@name` is
/// [`NodeSetError::UnknownGroup`].
pub fn parse(expr: &str) -> Result<NodeSet, NodeSetError> {
    Parser::new(None).expr(expr)
}

/// Parses a node set expression, resolving `@name` through `groups`, which
/// returns the group's definition (itself a node set expression, which may use
/// other groups) or `None` for an unknown group. A map works as
/// `parse_with(expr, &|g| map.get(g).cloned())`.
///
/// # Errors
///
/// A [`NodeSetError`] naming the problem and its column; an error inside a
/// group's definition is [`NodeSetError::InGroup`], with the cause as source.
pub fn parse_with(expr: &str, groups: &dyn Fn(&str) -> Option<String>) -> Result<NodeSet, NodeSetError> {
    Parser::new(Some(groups)).expr(expr)
}

/// A set of node names. See the module documentation for the representation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NodeSet {
    by_pattern: BTreeMap<Pattern, Tuples>,
}

impl NodeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`parse`] as an associated function.
    ///
    /// # Errors
    ///
    /// As [`parse`].
    pub fn parse(expr: &str) -> Result<NodeSet, NodeSetError> {
        parse(expr)
    }

    /// [`parse_with`] as an associated function.
    ///
    /// # Errors
    ///
    /// As [`parse_with`].
    pub fn parse_with(expr: &str, groups: &dyn Fn(&str) -> Option<String>) -> Result<NodeSet, NodeSetError> {
        parse_with(expr, groups)
    }

    /// The set of the given names, taken verbatim: a name is not parsed as an
    /// expression, so names holding `,![]&^@` or surrounding whitespace will not
    /// survive a [`fold`](Self::fold) and re-[`parse`]. Empty names are skipped.
    pub fn from_names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut flat: HashMap<String, Vec<u64>> = HashMap::new();
        let mut key = String::new();
        let mut idx = Vec::new();
        for name in names.into_iter().filter(|n| !n.as_ref().is_empty()) {
            split_name(name.as_ref(), &mut key, &mut idx);
            match flat.get_mut(key.as_str()) {
                Some(v) => v.extend_from_slice(&idx),
                None => {
                    flat.insert(key.clone(), idx.clone());
                }
            }
        }
        let mut set = NodeSet::new();
        for (key, data) in flat {
            let pattern = Pattern::from_key(key);
            let tuples = Tuples::from_unsorted(pattern.dims(), data);
            set.by_pattern.insert(pattern, tuples);
        }
        set
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.by_pattern.values().map(|t| t.count).sum()
    }

    /// Number of indexes held (a name without numbers counts as one), the
    /// measure of the set's memory that [`INDEXES_PER_NAME`] limits.
    fn indexes(&self) -> usize {
        self.by_pattern.values().map(|t| t.count * t.dims.max(1)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pattern.is_empty()
    }

    /// Whether `name` (a single node name, not an expression) is in the set.
    pub fn contains(&self, name: &str) -> bool {
        let mut key = String::new();
        let mut idx = Vec::new();
        split_name(name, &mut key, &mut idx);
        // Patterns are ordered by key, so a probe pattern needs only its key.
        let probe = Pattern { key, literals: Vec::new() };
        self.by_pattern.get(&probe).is_some_and(|t| t.contains(&idx))
    }

    /// The names, sorted by pattern then by each index in turn (ClusterShell's
    /// index order: shorter digit strings first, then by value).
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        self.by_pattern
            .iter()
            .flat_map(|(pattern, tuples)| (0..tuples.count).map(move |i| pattern.name(tuples.tuple(i))))
    }

    /// All names, in [`iter`](Self::iter) order.
    pub fn expand(&self) -> Vec<String> {
        self.iter().collect()
    }

    /// Names in `self` or `other`.
    #[must_use]
    pub fn union(&self, other: &NodeSet) -> NodeSet {
        self.combine(other, Keep::UNION)
    }

    /// Names in both `self` and `other`.
    #[must_use]
    pub fn intersection(&self, other: &NodeSet) -> NodeSet {
        self.combine(other, Keep::INTERSECTION)
    }

    /// Names in `self` but not in `other`.
    #[must_use]
    pub fn difference(&self, other: &NodeSet) -> NodeSet {
        self.combine(other, Keep::DIFFERENCE)
    }

    /// Names in exactly one of `self` and `other`.
    #[must_use]
    pub fn symmetric_difference(&self, other: &NodeSet) -> NodeSet {
        self.combine(other, Keep::SYMMETRIC_DIFFERENCE)
    }

    /// The folded form, as `nodeset -f` prints it (also what `Display` shows).
    pub fn fold(&self) -> String {
        let mut out = String::new();
        for (pattern, tuples) in &self.by_pattern {
            if !out.is_empty() {
                out.push(',');
            }
            fold_pattern(&mut out, pattern, tuples);
        }
        out
    }

    /// Folded with groups, as ClusterShell's `nodeset -r`: the groups whose
    /// every node is in the set, largest first, each taken only if none of
    /// its nodes is taken already; then the names they leave, folded.
    /// `groups` are `(name, nodes)`; the result names them `@name`.
    pub fn regroup(&self, groups: &[(String, NodeSet)]) -> String {
        let mut fitting: Vec<&(String, NodeSet)> =
            groups.iter().filter(|(_, g)| !g.is_empty() && g.difference(self).is_empty()).collect();
        fitting.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        let mut rest = self.clone();
        let mut taken: Vec<&str> = Vec::new();
        for (name, nodes) in fitting {
            if nodes.difference(&rest).is_empty() {
                rest = rest.difference(nodes);
                taken.push(name);
            }
        }
        taken.sort_unstable();
        let mut parts: Vec<String> = taken.iter().map(|name| format!("@{name}")).collect();
        if !rest.is_empty() {
            parts.push(rest.fold());
        }
        parts.join(",")
    }

    fn combine(&self, other: &NodeSet, keep: Keep) -> NodeSet {
        let mut out = BTreeMap::new();
        let mut a = self.by_pattern.iter().peekable();
        let mut b = other.by_pattern.iter().peekable();
        loop {
            let (pattern, tuples) = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(&(pa, ta)), Some(&(pb, tb))) => match pa.cmp(pb) {
                    Ordering::Less => {
                        a.next();
                        (pa, keep.only_a.then(|| ta.clone()))
                    }
                    Ordering::Greater => {
                        b.next();
                        (pb, keep.only_b.then(|| tb.clone()))
                    }
                    Ordering::Equal => {
                        a.next();
                        b.next();
                        (pa, Some(Tuples::merge(ta, tb, keep)))
                    }
                },
                (Some(&(pa, ta)), None) => {
                    a.next();
                    (pa, keep.only_a.then(|| ta.clone()))
                }
                (None, Some(&(pb, tb))) => {
                    b.next();
                    (pb, keep.only_b.then(|| tb.clone()))
                }
            };
            if let Some(t) = tuples.filter(|t| t.count > 0) {
                out.insert(pattern.clone(), t);
            }
        }
        NodeSet { by_pattern: out }
    }

    /// The union of many sets at once, merged pairwise in rounds: each round
    /// halves the number of parts with linear merges, so k sorted parts of N
    /// names in all cost N log k, whatever their sizes. (One sort of
    /// everything costs N log N even when one part holds nearly all the
    /// names: `n[1-8000000]n1,n1[1-9]n1,n1[1-9]n1` took seconds; found by the
    /// `nodeset` fuzz target.)
    fn union_all(mut sets: Vec<NodeSet>) -> NodeSet {
        while sets.len() > 1 {
            let mut next = Vec::with_capacity(sets.len().div_ceil(2));
            let mut parts = sets.into_iter();
            while let Some(a) = parts.next() {
                next.push(match parts.next() {
                    Some(b) => a.union(&b),
                    None => a,
                });
            }
            sets = next;
        }
        sets.pop().unwrap_or_default()
    }
}

impl FromStr for NodeSet {
    type Err = NodeSetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl fmt::Display for NodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fold())
    }
}

impl fmt::Debug for NodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeSet({:?})", self.fold())
    }
}

impl<S: AsRef<str>> FromIterator<S> for NodeSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        NodeSet::from_names(iter)
    }
}

// ---------------------------------------------------------------------------
// Index ordinals

const POW10: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// `OFFSET[w]` is the ordinal of the first `w`-digit string (`0…0`); the
/// strings of width `w` take the ordinals `OFFSET[w] .. OFFSET[w + 1]`.
const OFFSET: [u64; MAX_DIGITS + 2] = {
    let mut t = [0u64; MAX_DIGITS + 2];
    let mut w = 2;
    while w <= MAX_DIGITS + 1 {
        t[w] = t[w - 1] + POW10[w - 1];
        w += 1;
    }
    t
};

/// The ordinal of the `width`-digit string of `value` (`value < 10^width`).
fn encode(width: usize, value: u64) -> u64 {
    debug_assert!((1..=MAX_DIGITS).contains(&width) && value < POW10[width]);
    OFFSET[width] + value
}

/// `(width, value)` of an ordinal.
fn decode(ord: u64) -> (usize, u64) {
    let width = OFFSET[1..=MAX_DIGITS].partition_point(|&o| o <= ord);
    (width, ord - OFFSET[width])
}

fn digit_count(value: u64) -> usize {
    POW10[1..].partition_point(|&p| p <= value) + 1
}

/// Whether the digit string has a leading zero (ClusterShell's "padded").
fn is_padded(width: usize, value: u64) -> bool {
    width > digit_count(value)
}

/// Compares the digit strings of two ordinals as strings, as Python does.
fn string_cmp(a: u64, b: u64) -> Ordering {
    let ((wa, va), (wb, vb)) = (decode(a), decode(b));
    let m = wa.min(wb);
    (va / POW10[wa - m]).cmp(&(vb / POW10[wb - m])).then(wa.cmp(&wb))
}

fn push_digits(out: &mut String, value: u64, width: usize) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{value:0width$}");
}

// ---------------------------------------------------------------------------
// Patterns and tuples

/// A name with its digit runs taken out. `key` is ClusterShell's format
/// string (`%s` per dimension, `%` doubled), which orders patterns as
/// ClusterShell does; `literals` are the texts around the dimensions.
#[derive(Clone, Debug)]
struct Pattern {
    key: String,
    literals: Vec<String>,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Pattern {}
impl PartialOrd for Pattern {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pattern {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

impl Pattern {
    fn from_key(key: String) -> Pattern {
        let mut literals = vec![String::new()];
        let mut chars = key.chars();
        while let Some(c) = chars.next() {
            match (c, chars.clone().next()) {
                ('%', Some('s')) => {
                    chars.next();
                    literals.push(String::new());
                }
                (c, next) => {
                    if c == '%' && next == Some('%') {
                        chars.next();
                    }
                    if let Some(l) = literals.last_mut() {
                        l.push(c);
                    }
                }
            }
        }
        Pattern { key, literals }
    }

    fn dims(&self) -> usize {
        self.literals.len() - 1
    }

    fn name(&self, tuple: &[u64]) -> String {
        let mut out = String::with_capacity(self.key.len() + 4 * tuple.len());
        out.push_str(&self.literals[0]);
        for (ord, literal) in tuple.iter().zip(&self.literals[1..]) {
            let (width, value) = decode(*ord);
            push_digits(&mut out, value, width);
            out.push_str(literal);
        }
        out
    }
}

fn push_key_text(key: &mut String, text: &str) {
    for c in text.chars() {
        if c == '%' {
            key.push('%');
        }
        key.push(c);
    }
}

/// Splits a plain name into its pattern key and index ordinals.
fn split_name(name: &str, key: &mut String, idx: &mut Vec<u64>) {
    key.clear();
    idx.clear();
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        if bytes[i].is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &name[start..i];
            match digits_ordinal(digits) {
                Some(ord) => {
                    key.push_str("%s");
                    idx.push(ord);
                }
                None => key.push_str(digits),
            }
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_digit() {
                i += 1;
            }
            push_key_text(key, &name[start..i]);
        }
    }
}

/// The ordinal of a run of ASCII digits, if it is short enough to be an index.
fn digits_ordinal(digits: &str) -> Option<u64> {
    if digits.is_empty() || digits.len() > MAX_DIGITS {
        return None;
    }
    digits.parse::<u64>().ok().map(|v| encode(digits.len(), v))
}

/// Which parts of two sets a set operation keeps.
#[derive(Clone, Copy)]
struct Keep {
    only_a: bool,
    both: bool,
    only_b: bool,
}

impl Keep {
    const UNION: Keep = Keep { only_a: true, both: true, only_b: true };
    const INTERSECTION: Keep = Keep { only_a: false, both: true, only_b: false };
    const DIFFERENCE: Keep = Keep { only_a: true, both: false, only_b: false };
    const SYMMETRIC_DIFFERENCE: Keep = Keep { only_a: true, both: false, only_b: true };
}

/// The index tuples of one pattern: `count` tuples of `dims` ordinals, sorted
/// and unique, flattened. A pattern without digits has `dims == 0` and
/// `count == 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tuples {
    dims: usize,
    count: usize,
    flat: Vec<u64>,
}

impl Tuples {
    fn tuple(&self, i: usize) -> &[u64] {
        &self.flat[i * self.dims..(i + 1) * self.dims]
    }

    fn from_unsorted(dims: usize, flat: Vec<u64>) -> Tuples {
        match dims {
            0 => Tuples { dims, count: 1, flat: Vec::new() },
            1 => {
                let mut flat = flat;
                flat.sort_unstable();
                flat.dedup();
                Tuples { dims, count: flat.len(), flat }
            }
            _ => {
                let mut rows: Vec<&[u64]> = flat.chunks_exact(dims).collect();
                rows.sort_unstable();
                rows.dedup();
                Tuples { dims, count: rows.len(), flat: rows.concat() }
            }
        }
    }

    fn contains(&self, tuple: &[u64]) -> bool {
        if tuple.len() != self.dims {
            return false;
        }
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.tuple(mid).cmp(tuple) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return true,
            }
        }
        false
    }

    fn merge(a: &Tuples, b: &Tuples, keep: Keep) -> Tuples {
        let dims = a.dims;
        let mut flat = Vec::new();
        let mut count = 0;
        let (mut i, mut j) = (0, 0);
        let mut push = |t: &[u64], flat: &mut Vec<u64>| {
            flat.extend_from_slice(t);
            count += 1;
        };
        while i < a.count && j < b.count {
            let (ta, tb) = (a.tuple(i), b.tuple(j));
            match ta.cmp(tb) {
                Ordering::Less => {
                    if keep.only_a {
                        push(ta, &mut flat);
                    }
                    i += 1;
                }
                Ordering::Greater => {
                    if keep.only_b {
                        push(tb, &mut flat);
                    }
                    j += 1;
                }
                Ordering::Equal => {
                    if keep.both {
                        push(ta, &mut flat);
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        if keep.only_a {
            while i < a.count {
                push(a.tuple(i), &mut flat);
                i += 1;
            }
        }
        if keep.only_b {
            while j < b.count {
                push(b.tuple(j), &mut flat);
                j += 1;
            }
        }
        Tuples { dims, count, flat }
    }
}

// ---------------------------------------------------------------------------
// Folding

fn fold_pattern(out: &mut String, pattern: &Pattern, tuples: &Tuples) {
    match pattern.dims() {
        0 => out.push_str(&pattern.literals[0]),
        1 => {
            out.push_str(&pattern.literals[0]);
            push_rangeset(out, &tuples.flat);
            out.push_str(&pattern.literals[1]);
        }
        _ => {
            for (n, vector) in fold_vectors(tuples).iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&pattern.literals[0]);
                for (set, literal) in vector.sets.iter().zip(&pattern.literals[1..]) {
                    push_rangeset(out, set);
                    out.push_str(literal);
                }
            }
        }
    }
}

/// Splits a sorted set of ordinals into ClusterShell's contiguous runs
/// `(first, last, pad)`, `pad` being the zero-padded width or 0.
///
/// This is a port of `RangeSet._slices_padding` with autostep off, quirks
/// included: a run is broken by a gap or by a padding change (an unpadded run
/// takes no padded index; a padded run only indexes of its width), and a run
/// that starts right after a broken arithmetic progression inherits the
/// padding of the progression's start, so `079,199-1001` prints as
/// `079,199-999,1000-1001`.
fn runs(ords: &[u64]) -> Vec<(u64, u64, usize)> {
    struct Run {
        start: u64,
        last: u64,
        padded: bool,
        width: usize,
        step: Option<u64>,
    }
    impl Run {
        fn pad(&self) -> usize {
            if self.padded { self.width } else { 0 }
        }
    }
    let mut out = Vec::new();
    let singles = |out: &mut Vec<(u64, u64, usize)>, from: u64, to: u64, step: u64, pad| {
        let mut j = Some(from);
        while let Some(v) = j.filter(|&v| v <= to) {
            out.push((v, v, pad));
            j = v.checked_add(step);
        }
    };
    let mut run: Option<Run> = None;
    for &ord in ords {
        let (width, value) = decode(ord);
        let padded = is_padded(width, value);
        let Some(r) = run.as_mut() else {
            run = Some(Run { start: value, last: value, padded, width, step: None });
            continue;
        };
        let gap = value.wrapping_sub(r.last);
        let padding_mismatch = if r.padded { width != r.width } else { padded };
        let step_mismatch = !padding_mismatch && r.step.is_some_and(|s| s != gap);
        if !padding_mismatch && !step_mismatch {
            r.step = Some(gap);
            r.last = value;
            continue;
        }
        match r.step {
            None | Some(1) => {
                out.push((r.start, r.last, r.pad()));
                (r.start, r.padded, r.width) = (value, padded, width);
            }
            Some(step) => {
                // A progression of step > 1 comes out as single indexes; on a
                // step change its last index starts the next run.
                let to = if padding_mismatch { r.last } else { r.last.saturating_sub(step) };
                singles(&mut out, r.start, to, step, r.pad());
                if padding_mismatch {
                    (r.start, r.padded, r.width) = (value, padded, width);
                } else {
                    r.start = r.last;
                }
            }
        }
        r.step = step_mismatch.then_some(gap);
        r.last = value;
    }
    if let Some(r) = run {
        match r.step {
            None | Some(1) => out.push((r.start, r.last, r.pad())),
            Some(step) => singles(&mut out, r.start, r.last, step, r.pad()),
        }
    }
    out
}

/// Writes one run as `first` or `first-last`, zero-padded to `pad`, with
/// `lead` before each bound.
fn push_run(out: &mut String, lead: &str, (first, last, pad): (u64, u64, usize)) {
    out.push_str(lead);
    push_digits(out, first, pad);
    if last != first {
        out.push('-');
        out.push_str(lead);
        push_digits(out, last, pad);
    }
}

/// Writes a sorted set of ordinals as ClusterShell's `RangeSet` prints it:
/// `[a-b,c]`, or a bare index for a single element.
fn push_rangeset(out: &mut String, ords: &[u64]) {
    let bracket = ords.len() > 1;
    if bracket {
        out.push('[');
    }
    for (n, run) in runs(ords).into_iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        push_run(out, "", run);
    }
    if bracket {
        out.push(']');
    }
}

/// One folded n-D term: a product of one index set per dimension.
#[derive(Clone, Debug)]
struct Vector {
    /// Sorted ordinals per dimension.
    sets: Vec<Vec<u64>>,
    /// Order-independent hash of each set (sum of mixed elements), kept up to
    /// date on merges so that lookups never rehash a large set.
    hashes: Vec<u64>,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Vector {
    fn point(tuple: &[u64]) -> Vector {
        Vector { sets: tuple.iter().map(|&o| vec![o]).collect(), hashes: tuple.iter().map(|&o| mix(o)).collect() }
    }

    fn size(&self) -> usize {
        self.sets.iter().map(Vec::len).product()
    }

    fn same_set(&self, other: &Vector, d: usize) -> bool {
        self.hashes[d] == other.hashes[d] && self.sets[d] == other.sets[d]
    }

    /// The only dimension in which the two vectors differ, if there is
    /// exactly one.
    fn sole_difference(&self, other: &Vector) -> Option<usize> {
        let mut found = None;
        for d in 0..self.sets.len() {
            if !self.same_set(other, d) {
                if found.is_some() {
                    return None;
                }
                found = Some(d);
            }
        }
        found
    }

    fn equal_except(&self, other: &Vector, except: usize) -> bool {
        (0..self.sets.len()).all(|d| d == except || self.same_set(other, d))
    }

    /// Hash of all dimensions but `except`: vectors that can merge along
    /// `except` share it.
    fn key_except(&self, except: usize) -> u64 {
        let mut key = 0x243f_6a88_85a3_08d3;
        for (d, h) in self.hashes.iter().enumerate() {
            if d != except {
                key = mix(key ^ h.wrapping_add(d as u64));
            }
        }
        key
    }

    /// Adds `other`'s set in dimension `d` to this vector's.
    fn absorb(&mut self, d: usize, other: Vec<u64>) {
        let set = &mut self.sets[d];
        let mut added = 0u64;
        if other.len() <= 8 {
            for x in other {
                if let Err(pos) = set.binary_search(&x) {
                    set.insert(pos, x);
                    added = added.wrapping_add(mix(x));
                }
            }
        } else {
            let mut merged = Vec::with_capacity(set.len() + other.len());
            let (mut i, mut j) = (0, 0);
            while i < set.len() || j < other.len() {
                if j == other.len() || (i < set.len() && set[i] < other[j]) {
                    merged.push(set[i]);
                    i += 1;
                } else {
                    if i < set.len() && set[i] == other[j] {
                        i += 1;
                    } else {
                        added = added.wrapping_add(mix(other[j]));
                    }
                    merged.push(other[j]);
                    j += 1;
                }
            }
            *set = merged;
        }
        self.hashes[d] = self.hashes[d].wrapping_add(added);
    }
}

/// ClusterShell's `RangeSetND._sort` key: larger vectors first, then per
/// dimension larger sets first, then the first and last index compared as
/// strings.
fn clustershell_order(a: &Vector, b: &Vector) -> Ordering {
    b.size().cmp(&a.size()).then_with(|| {
        for (sa, sb) in a.sets.iter().zip(&b.sets) {
            let o = sb
                .len()
                .cmp(&sa.len())
                .then_with(|| string_cmp(sa[0], sb[0]))
                .then_with(|| string_cmp(sa[sa.len() - 1], sb[sb.len() - 1]));
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    })
}

/// Folds the tuples of an n-D pattern into product vectors, in the order and
/// shape ClusterShell's `RangeSetND` folding gives.
fn fold_vectors(tuples: &Tuples) -> Vec<Vector> {
    let dims = tuples.dims;
    if tuples.count == 1 {
        return vec![Vector::point(tuples.tuple(0))];
    }
    // A full product folds to itself; checking it first keeps large regular
    // sets (r[1-100]-n[1-1000]) away from the general merge.
    let mut axes: Vec<Vec<u64>> = vec![Vec::new(); dims];
    for i in 0..tuples.count {
        for (axis, &o) in axes.iter_mut().zip(tuples.tuple(i)) {
            axis.push(o);
        }
    }
    let mut product = 1usize;
    for axis in &mut axes {
        axis.sort_unstable();
        axis.dedup();
        product = product.saturating_mul(axis.len());
    }
    if product == tuples.count {
        let hashes = axes.iter().map(|a| a.iter().fold(0u64, |h, &o| h.wrapping_add(mix(o)))).collect();
        return vec![Vector { sets: axes, hashes }];
    }
    drop(axes);

    // ClusterShell's _fold_multivariate: start from single points, then
    // repeat { sort; merge pass } until a pass changes nothing, with cheap
    // neighbour-only passes first and all-pairs passes once those stall. The
    // vectors always partition the set, so two vectors can merge exactly when
    // they differ in one dimension.
    let mut vectors: Vec<Vector> = (0..tuples.count).map(|i| Vector::point(tuples.tuple(i))).collect();
    let mut all_pairs = false;
    loop {
        vectors.sort_unstable_by(clustershell_order);
        let changed = if all_pairs { all_pairs_pass(&mut vectors) } else { neighbour_pass(&mut vectors) };
        if !changed {
            if all_pairs {
                return vectors;
            }
            all_pairs = true;
        }
    }
}

/// One "easy" pass: each vector absorbs the run of vectors right after it that
/// each differ from it in one dimension.
fn neighbour_pass(vectors: &mut Vec<Vector>) -> bool {
    let n = vectors.len();
    let mut alive = vec![true; n];
    let mut changed = false;
    let mut i = 0;
    while i < n {
        let mut q = i + 1;
        while q < n {
            let Some(d) = vectors[i].sole_difference(&vectors[q]) else {
                break;
            };
            let other = std::mem::take(&mut vectors[q].sets[d]);
            vectors[i].absorb(d, other);
            alive[q] = false;
            changed = true;
            q += 1;
        }
        i = q;
    }
    retain_alive(vectors, &alive);
    changed
}

/// One "full" pass: each vector, in order, absorbs every later vector that
/// differs from it in one dimension, scanning forward from its last merge as
/// ClusterShell does; candidates come from a per-dimension index keyed by the
/// other dimensions instead of a scan over all later vectors.
fn all_pairs_pass(vectors: &mut Vec<Vector>) -> bool {
    let n = vectors.len();
    let dims = vectors.first().map_or(0, |v| v.sets.len());
    // Entries of vectors at or before the current one are never looked up
    // again, so the index needs no update when a vector grows.
    let index: Vec<Vec<(u64, usize)>> = (0..dims)
        .map(|d| {
            let mut entries: Vec<(u64, usize)> =
                vectors.iter().enumerate().map(|(pos, v)| (v.key_except(d), pos)).collect();
            entries.sort_unstable();
            entries
        })
        .collect();
    let mut alive = vec![true; n];
    let mut changed = false;
    for i in 0..n {
        if !alive[i] {
            continue;
        }
        let mut after = i;
        loop {
            let mut best: Option<(usize, usize)> = None;
            for (d, entries) in index.iter().enumerate() {
                let key = vectors[i].key_except(d);
                let start = entries.partition_point(|&e| e <= (key, after));
                for &(k, pos) in &entries[start..] {
                    if k != key || best.is_some_and(|(b, _)| pos >= b) {
                        break;
                    }
                    if alive[pos] && vectors[i].equal_except(&vectors[pos], d) {
                        best = Some((pos, d));
                        break;
                    }
                }
            }
            let Some((q, d)) = best else { break };
            let other = std::mem::take(&mut vectors[q].sets[d]);
            vectors[i].absorb(d, other);
            alive[q] = false;
            changed = true;
            after = q;
        }
    }
    retain_alive(vectors, &alive);
    changed
}

fn retain_alive(vectors: &mut Vec<Vector>, alive: &[bool]) {
    let mut flags = alive.iter();
    vectors.retain(|_| flags.next().copied().unwrap_or(false));
}

// ---------------------------------------------------------------------------
// Parsing

type Resolver<'g> = &'g dyn Fn(&str) -> Option<String>;

struct Parser<'g> {
    groups: Option<Resolver<'g>>,
    /// Largest set this parse may build ([`MAX_NODES`]; smaller in tests).
    limit: usize,
    /// Groups already expanded in this parse.
    resolved: HashMap<String, NodeSet>,
    /// Groups being expanded, innermost last.
    expanding: Vec<String>,
}

/// One operand of an expression: the operator before it and its byte span.
struct Term {
    op: u8,
    op_at: usize,
    start: usize,
    end: usize,
}

fn column(text: &str, byte: usize) -> usize {
    text.get(..byte).map_or(byte, |s| s.chars().count()) + 1
}

impl<'g> Parser<'g> {
    fn new(groups: Option<Resolver<'g>>) -> Self {
        Parser { groups, limit: MAX_NODES, resolved: HashMap::new(), expanding: Vec::new() }
    }

    fn expr(&mut self, text: &str) -> Result<NodeSet, NodeSetError> {
        if text.trim().is_empty() {
            return Ok(NodeSet::new());
        }
        let terms = split_terms(text)?;
        // The value so far is kept as unmerged parts, and a run of
        // differences as unmerged subtrahends, so that `a,b,c,…` and
        // `a!b!c!…` cost one sort rather than one merge per term.
        let mut value = Batch::default();
        let mut subtrahends = Batch::default();
        for (k, term) in terms.iter().enumerate() {
            let raw = &text[term.start..term.end];
            let start = term.start + (raw.len() - raw.trim_start().len());
            let end = term.start + raw.trim_end().len();
            if start >= end {
                // Blame the operator before an empty operand, or the one
                // after it for a leading one.
                let blame = if k == 0 { &terms[1] } else { term };
                return Err(NodeSetError::MissingOperand {
                    op: char::from(blame.op),
                    column: column(text, blame.op_at),
                });
            }
            let operand = self.term(text, start, end)?;
            if term.op != b'!' && !subtrahends.is_empty() {
                let rest = value.take().difference(&subtrahends.take());
                value.push(rest);
            }
            match term.op {
                b',' => value.push(operand),
                b'!' => subtrahends.push(operand),
                b'&' => {
                    let both = value.take().intersection(&operand);
                    value.push(both);
                }
                _ => {
                    let either = value.take().symmetric_difference(&operand);
                    value.push(either);
                }
            }
            if !value.fits(self.limit) || !subtrahends.fits(self.limit) {
                return Err(NodeSetError::TooLarge { limit: self.limit, column: column(text, start) });
            }
        }
        let mut result = value.take();
        if !subtrahends.is_empty() {
            result = result.difference(&subtrahends.take());
        }
        if result.len() > self.limit || result.indexes() > self.limit.saturating_mul(INDEXES_PER_NAME) {
            // Batch::fits may defer the exact count to here.
            let last = terms.last().map_or(0, |t| t.start);
            return Err(NodeSetError::TooLarge {
                limit: self.limit,
                column: column(text, last + (text[last..].len() - text[last..].trim_start().len())),
            });
        }
        Ok(result)
    }

    fn term(&mut self, text: &str, start: usize, end: usize) -> Result<NodeSet, NodeSetError> {
        let (pattern, tuples) = pattern_term(text, start, end, self.limit)?;
        let set = NodeSet { by_pattern: BTreeMap::from([(pattern, tuples)]) };
        if text[start..end].starts_with('@') { self.groups_term(text, start, &set) } else { Ok(set) }
    }

    /// Expands a term naming groups (`@name`, or `@name[1-3]` for several).
    fn groups_term(&mut self, text: &str, start: usize, names: &NodeSet) -> Result<NodeSet, NodeSetError> {
        let at = column(text, start);
        let mut result = Batch::default();
        for name in names.iter() {
            let name = &name[1..];
            let members = if let Some(members) = self.resolved.get(name) {
                members.clone()
            } else {
                if self.expanding.iter().any(|g| g == name) {
                    return Err(NodeSetError::GroupCycle { name: name.to_owned(), column: at });
                }
                if self.expanding.len() >= MAX_GROUP_DEPTH {
                    return Err(NodeSetError::GroupTooDeep {
                        name: name.to_owned(),
                        column: at,
                        limit: MAX_GROUP_DEPTH,
                    });
                }
                let definition = self
                    .groups
                    .and_then(|g| g(name))
                    .ok_or_else(|| NodeSetError::UnknownGroup { name: name.to_owned(), column: at })?;
                self.expanding.push(name.to_owned());
                let parsed = self.expr(&definition);
                self.expanding.pop();
                let members = parsed
                    .map_err(|source| NodeSetError::InGroup { name: name.to_owned(), source: Box::new(source) })?;
                self.resolved.insert(name.to_owned(), members.clone());
                members
            };
            result.push(members);
            if !result.fits(self.limit) {
                return Err(NodeSetError::TooLarge { limit: self.limit, column: at });
            }
        }
        let result = result.take();
        if result.len() > self.limit || result.indexes() > self.limit.saturating_mul(INDEXES_PER_NAME) {
            return Err(NodeSetError::TooLarge { limit: self.limit, column: at });
        }
        Ok(result)
    }
}

/// A union in progress: sets to be merged by one [`NodeSet::union_all`].
#[derive(Default)]
struct Batch {
    parts: Vec<NodeSet>,
    /// Names in `parts`, duplicates counted.
    len: usize,
    /// Names after the last merge, when `parts` was one set.
    merged: usize,
    /// Indexes in `parts`, duplicates counted.
    indexes: usize,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    fn push(&mut self, set: NodeSet) {
        self.len += set.len();
        self.indexes += set.indexes();
        self.parts.push(set);
    }

    /// Whether the union may still be within `limit` names: false only when
    /// it certainly is not. Parts over the limit (duplicates counted) are
    /// merged to count them exactly, but only once they have doubled since
    /// the last merge, so that merging stays linear overall and memory within
    /// twice the limit; the caller checks the final union.
    ///
    /// Indexes are bounded the same way against `limit` ×
    /// [`INDEXES_PER_NAME`]: merged once over twice that, so that memory
    /// stays within twice the bound too.
    fn fits(&mut self, limit: usize) -> bool {
        let index_limit = limit.saturating_mul(INDEXES_PER_NAME);
        if self.len <= limit && self.indexes <= index_limit {
            return true;
        }
        if self.len > self.merged.saturating_mul(2)
            || self.len > limit.saturating_mul(2)
            || self.indexes > index_limit.saturating_mul(2)
        {
            let merged = self.take();
            self.push(merged);
            self.merged = self.len;
            return self.len <= limit && self.indexes <= index_limit;
        }
        true
    }

    fn take(&mut self) -> NodeSet {
        self.len = 0;
        self.merged = 0;
        self.indexes = 0;
        NodeSet::union_all(std::mem::take(&mut self.parts))
    }
}

/// Splits an expression at the operators outside brackets, checking that
/// brackets balance and do not nest.
fn split_terms(text: &str) -> Result<Vec<Term>, NodeSetError> {
    let mut terms = Vec::new();
    let mut open: Option<usize> = None;
    let (mut op, mut op_at, mut start) = (b',', 0, 0);
    for (i, &b) in text.as_bytes().iter().enumerate() {
        match b {
            b'[' if open.is_some() => {
                return Err(NodeSetError::NestedBracket { column: column(text, i) });
            }
            b'[' => open = Some(i),
            b']' if open.is_none() => {
                return Err(NodeSetError::UnopenedBracket { column: column(text, i) });
            }
            b']' => open = None,
            b',' | b'!' | b'&' | b'^' if open.is_none() => {
                terms.push(Term { op, op_at, start, end: i });
                (op, op_at, start) = (b, i, i + 1);
            }
            _ => {}
        }
    }
    if let Some(i) = open {
        return Err(NodeSetError::UnclosedBracket { column: column(text, i) });
    }
    terms.push(Term { op, op_at, start, end: text.len() });
    Ok(terms)
}

/// Parses one operand (no operators; brackets balanced) into its pattern and
/// index tuples.
fn pattern_term(text: &str, start: usize, end: usize, limit: usize) -> Result<(Pattern, Tuples), NodeSetError> {
    let bytes = text.as_bytes();
    let mut key = String::new();
    let mut axes: Vec<Vec<u64>> = Vec::new();
    let mut i = start;
    while i < end {
        let b = bytes[i];
        if b.is_ascii_digit() || b == b'[' {
            // One number: leading digits, at most one bracket range, trailing
            // digits.
            let number_at = i;
            let mut lead = "";
            let mut trail = "";
            let mut range: Option<(usize, usize)> = None;
            while i < end && (bytes[i].is_ascii_digit() || bytes[i] == b'[') {
                if bytes[i] == b'[' {
                    if range.is_some() {
                        return Err(NodeSetError::AdjacentBrackets { column: column(text, i) });
                    }
                    let close = text[i..end]
                        .find(']')
                        .map(|c| i + c)
                        .ok_or_else(|| NodeSetError::UnclosedBracket { column: column(text, i) })?;
                    range = Some((i + 1, close));
                    i = close + 1;
                } else {
                    let s = i;
                    while i < end && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                    if range.is_none() {
                        lead = &text[s..i];
                    } else {
                        trail = &text[s..i];
                    }
                }
            }
            match range {
                None => match digits_ordinal(lead) {
                    Some(ord) => {
                        key.push_str("%s");
                        axes.push(vec![ord]);
                    }
                    None => key.push_str(lead),
                },
                Some((s, e)) => {
                    if text[s..e].trim().is_empty() {
                        return Err(NodeSetError::EmptyRange { column: column(text, s - 1) });
                    }
                    key.push_str("%s");
                    axes.push(bracket_values(text, number_at, lead, (s, e), trail, limit)?);
                }
            }
        } else if b == b']' {
            return Err(NodeSetError::UnopenedBracket { column: column(text, i) });
        } else {
            let s = i;
            while i < end && !matches!(bytes[i], b'0'..=b'9' | b'[' | b']') {
                i += 1;
            }
            push_key_text(&mut key, &text[s..i]);
        }
    }
    let count = axes
        .iter()
        .try_fold(1usize, |n, a| n.checked_mul(a.len()))
        .filter(|&n| n <= limit)
        .filter(|&n| n.saturating_mul(axes.len().max(1)) <= limit.saturating_mul(INDEXES_PER_NAME))
        .ok_or_else(|| NodeSetError::TooLarge { limit, column: column(text, start) })?;
    let pattern = Pattern::from_key(key);
    let dims = axes.len();
    let mut flat = Vec::with_capacity(count * dims);
    if dims > 0 {
        // Odometer over the axes: each axis is sorted, so the product comes
        // out sorted.
        let mut at = vec![0usize; dims];
        'outer: loop {
            flat.extend(at.iter().zip(&axes).map(|(&k, a)| a[k]));
            for d in (0..dims).rev() {
                at[d] += 1;
                if at[d] < axes[d].len() {
                    continue 'outer;
                }
                at[d] = 0;
            }
            break;
        }
    }
    Ok((pattern, Tuples { dims, count, flat }))
}

/// The indexes of a bracket range with the digits around it, following
/// ClusterShell's rewriting of the range text: trailing digits are appended to
/// each bound with a matching step (`[1-2]0` is `10-20/10`), then leading digits
/// are prefixed to the bounds of each contiguous run (`1[0-20]` is `10-120`,
/// `0[1-10]` is the invalid `01-010`). Errors in rewritten text point at the
/// number.
fn bracket_values(
    text: &str,
    number_at: usize,
    lead: &str,
    (start, end): (usize, usize),
    trail: &str,
    limit: usize,
) -> Result<Vec<u64>, NodeSetError> {
    let inner = &text[start..end];
    if lead.is_empty() && trail.is_empty() {
        return parse_range(inner, &|offset| column(text, start + offset), limit);
    }
    let at = column(text, number_at);
    let mut spec = inner.to_owned();
    if !trail.is_empty() {
        if spec.contains('/') {
            return Err(NodeSetError::StepWithTrailingDigits { column: at });
        }
        let shift = format!("/1{}", "0".repeat(trail.len()));
        let items: Vec<String> = spec
            .split(',')
            .map(|item| {
                let bounds: Vec<String> = item.split('-').map(|b| format!("{b}{trail}")).collect();
                let mut item = bounds.join("-");
                if bounds.len() > 1 {
                    item.push_str(&shift);
                }
                item
            })
            .collect();
        spec = items.join(",");
    }
    if !lead.is_empty() {
        let ords = parse_range(&spec, &|_| at, limit)?;
        let mut amended = String::new();
        for (n, run) in runs(&ords).into_iter().enumerate() {
            if n > 0 {
                amended.push(',');
            }
            push_run(&mut amended, lead, run);
        }
        spec = amended;
    }
    parse_range(&spec, &|_| at, limit)
}

/// Parses the inside of a bracket (`1-3,7,10-20/2`) into sorted unique
/// ordinals; `locate` turns a byte offset in `spec` into an error column.
fn parse_range(spec: &str, locate: &dyn Fn(usize) -> usize, limit: usize) -> Result<Vec<u64>, NodeSetError> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut piece_at = 0;
    for piece in spec.split(',') {
        let at = piece_at + (piece.len() - piece.trim_start().len());
        piece_at += piece.len() + 1;
        let item = piece.trim();
        let col = locate(at);
        if item.is_empty() {
            return Err(NodeSetError::EmptyRange { column: col });
        }
        let invalid = || NodeSetError::InvalidRange { text: item.to_owned(), column: col };
        let (base, step) = match item.split_once('/') {
            None => (item, None),
            Some((base, step)) => {
                let step = step.trim();
                let ok = !step.is_empty() && step.len() <= MAX_DIGITS && step.bytes().all(|b| b.is_ascii_digit());
                match step.parse::<u64>() {
                    Ok(s) if ok && s >= 1 => (base.trim(), Some(s)),
                    _ => {
                        return Err(NodeSetError::InvalidStep { text: item.to_owned(), column: col });
                    }
                }
            }
        };
        if base.starts_with('-') {
            return Err(NodeSetError::NegativeIndex { text: item.to_owned(), column: col });
        }
        let (first, last) = match base.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None if step.is_none_or(|s| s == 1) => (base, base),
            None => {
                return Err(NodeSetError::InvalidStep { text: item.to_owned(), column: col });
            }
        };
        for bound in [first, last] {
            if bound.is_empty() || !bound.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            if bound.len() > MAX_DIGITS {
                return Err(NodeSetError::NumberTooLarge { column: col });
            }
        }
        let (lo, hi): (u64, u64) = match (first.parse(), last.parse()) {
            (Ok(lo), Ok(hi)) => (lo, hi),
            _ => return Err(invalid()),
        };
        let first_padded = is_padded(first.len(), lo);
        if (first_padded || is_padded(last.len(), hi)) && first.len() != last.len() {
            return Err(NodeSetError::PaddingMismatch { text: item.to_owned(), column: col });
        }
        if lo > hi {
            return Err(NodeSetError::ReversedRange { text: item.to_owned(), column: col });
        }
        let step = step.unwrap_or(1);
        total = total.saturating_add((hi - lo) / step + 1);
        if total > limit as u64 {
            return Err(NodeSetError::TooLarge { limit, column: col });
        }
        let pad = if first_padded { first.len() } else { 0 };
        let mut v = lo;
        loop {
            out.push(encode(pad.max(digit_count(v)), v));
            if hi - v < step {
                break;
            }
            v += step;
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn regroup_takes_the_largest_groups_that_fit_without_overlap() {
        let set = |e: &str| NodeSet::parse(e).unwrap();
        let groups: Vec<(String, NodeSet)> =
            [("rack1", "n[1-4]"), ("rack2", "n[5-8]"), ("even", "n[2-8/2]"), ("big", "n[1-20]"), ("pair", "n[3-4]")]
                .iter()
                .map(|(n, e)| (n.to_string(), set(e)))
                .collect();
        // Ties go by name, as in ClusterShell: `even` is taken before the racks.
        assert_eq!(set("n[1-9]").regroup(&groups), "@even,n[1,3,5,7,9]");
        assert_eq!(set("n[1-9]").regroup(&groups[..2]), "@rack1,@rack2,n9");
        assert_eq!(set("n[3-5]").regroup(&groups), "@pair,n5");
        assert_eq!(set("n[1-20]").regroup(&groups), "@big");
        assert_eq!(set("x1").regroup(&groups), "x1");
        assert_eq!(NodeSet::new().regroup(&groups), "");
    }

    use super::*;
    use std::collections::BTreeMap;

    fn parsed(expr: &str) -> NodeSet {
        parse(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"))
    }

    fn fold(expr: &str) -> String {
        parsed(expr).fold()
    }

    fn expand(expr: &str) -> String {
        parsed(expr).expand().join(" ")
    }

    fn error(expr: &str) -> NodeSetError {
        match parse(expr) {
            Ok(set) => panic!("{expr:?} parsed as {set:?}"),
            Err(e) => e,
        }
    }

    /// A small deterministic generator (xorshift64*), so property tests need no
    /// extra dependency and always run the same cases.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Examples of ClusterShell's documentation, doc/sphinx/tools/nodeset.rst in
    /// cea-hpc/clustershell. Expected values are what ClusterShell 1.10.1's
    /// `nodeset -e`/`-f` prints; where that page predates 1.9's mixed-length
    /// padding (`node1 node02` was `node[01-02]`) the 1.10.1 output is used.
    #[test]
    fn documentation_expansions() {
        let cases = [
            ("node[13-15,17-19]", "node13 node14 node15 node17 node18 node19"),
            ("node[0-3]", "node0 node1 node2 node3"),
            ("node[1-2]x[1-2]", "node1x1 node1x2 node2x1 node2x2"),
            ("node[0-6/2]", "node0 node2 node4 node6"),
            ("node[08-11]", "node08 node09 node10 node11"),
            ("node[000-012/4]", "node000 node004 node008 node012"),
            ("node[156-159]", "node156 node157 node158 node159"),
        ];
        for (expr, names) in cases {
            assert_eq!(expand(expr), names, "{expr}");
        }
        assert_eq!(parsed("node[13-15,17-19]").len(), 6);
    }

    /// Fold examples of the same page (`nodeset -f`).
    #[test]
    fn documentation_folds() {
        let cases = [
            ("node1-ipmi,node2-ipmi,node3-ipmi", "node[1-3]-ipmi"),
            ("node1,node6,node7", "node[1,6-7]"),
            ("node0,node1,node6,node7", "node[0-1,6-7]"),
            ("nfsserv1,nfsserv2,nfsserv3", "nfsserv[1-3]"),
            ("node1,node3,node5", "node[1,3,5]"),
            ("node001,node002,node003,node005", "node[001-003,005]"),
            ("node1,node02", "node[1,02]"),
            ("node01,node002", "node[01,002]"),
            ("node-00[00-99]", "node-[0000-0099]"),
            ("node-01[01,09,42]", "node-[0101,0109,0142]"),
            ("node-[1-2]0-[0-2]5", "node-[10,20]-[05,15,25]"),
            ("node-00[1-6]0", "node-[0010,0020,0030,0040,0050,0060]"),
            ("node[1-3],node[4-7]", "node[1-7]"),
            ("node[1-3],node[2-7],node[5-8]", "node[1-8]"),
            ("node[1-4],node[5-9]", "node[1-9]"),
            ("node[1-9]!node6", "node[1-5,7-9]"),
            ("node[1-9]&node[6-12]", "node[6-9]"),
            ("node[1-9]^node[6-11]", "node[1-5,10-11]"),
            ("node[1-9]!node6&node[6-12]", "node[7-9]"),
            ("b2,b1,b0,b,c,a0,a", "a,a0,b,b[0-2],c"),
            ("comp-[1-2]-[1-36],login-[1-2]", "comp-[1-2]-[1-36],login-[1-2]"),
        ];
        for (expr, folded) in cases {
            assert_eq!(fold(expr), folded, "{expr}");
        }
    }

    /// `str(NodeSet(expr))` pairs asserted by ClusterShell's own test suite,
    /// tests/NodeSetTest.py in cea-hpc/clustershell (1.10.1), minus negative
    /// indexes, which kiln does not support.
    #[test]
    fn clustershell_test_suite_folds() {
        let cases: &[(&str, &str)] = &[
            (" tigrou2 , tigrou7 , tigrou[5,9-11] ", "tigrou[2,5,7,9-11]"),
            ("   tigrou2 ,    tigrou5,tigrou7 , tigrou[ 9   - 11 ]    ", "tigrou[2,5,7,9-11]"),
            ("tigrou 0, tigrou [1],tigrou [2-3]", "tigrou [0-3]"),
            ("clu-0-[3-23]", "clu-0-[3-23]"),
            ("clust%ser[3-30]", "clust%ser[3-30]"),
            ("myclu%ster,clust%ser[3-30]", "clust%ser[3-30],myclu%ster"),
            ("cluster[0-10]", "cluster[0-10]"),
            ("cluster[1-100]", "cluster[1-100]"),
            ("cluster[0001-0100]", "cluster[0001-0100]"),
            ("cluster[0034-8127]", "cluster[0034-8127]"),
            ("cluster[50-99]-ipmi", "cluster[50-99]-ipmi"),
            ("cluster[0001,0002,1555-1559]", "cluster[0001-0002,1555-1559]"),
            ("cluster[0001,0002,1555-1559]-ipmi", "cluster[0001-0002,1555-1559]-ipmi"),
            ("bigcluster[1-1000000]", "bigcluster[1-1000000]"),
            ("node0[0]", "node00"),
            ("node0[1]", "node01"),
            ("node1[0]", "node10"),
            ("node01[0-1]", "node[010-011]"),
            ("prod-02[10-20]", "prod-[0210-0220]"),
            ("prod-02[010-320]", "prod-[02010-02320]"),
            ("prod-000[1-9]", "prod-[0001-0009]"),
            ("prod-100[1-9]", "prod-[1001-1009]"),
            ("prod-100[040-042]", "prod-[100040-100042]"),
            ("prod-10[01,05,09-15,40-50,52]", "prod-[1001,1005,1009-1015,1040-1050,1052]"),
            ("prod-0[040-042],sysgrp-00[01-02]", "prod-[0040-0042],sysgrp-[0001-0002]"),
            ("prod-100[040-042],sysgrp-00[01-02]", "prod-[100040-100042],sysgrp-[0001-0002]"),
            ("prod-000[0-8/2],prod-000[1-9/2]", "prod-[0000-0009]"),
            ("node-1[0-48/16]", "node-[10,116,132,148]"),
            ("x01[0-1]y01[0-1]z01[0-1]", "x[010-011]y[010-011]z[010-011]"),
            ("x22[0-1]y00[0-1]z03[0-1]", "x[220-221]y[000-001]z[030-031]"),
            ("x22[0-1]y000z03[0-1]", "x[220-221]y000z[030-031]"),
            ("x22[0-1]0y03[0-1]0", "x[2200,2210]y[0300,0310]"),
            ("x22[0-1]0y03[0-1]0-ipmi", "x[2200,2210]y[0300,0310]-ipmi"),
            ("node[0]0", "node00"),
            ("node[0]1", "node01"),
            ("node[1]0", "node10"),
            ("nova16[1-4]56", "nova[16156,16256,16356,16456]"),
            ("nova16[1-4]56c", "nova[16156,16256,16356,16456]c"),
            ("node0[0]0", "node000"),
            ("node0[1]0", "node010"),
            ("node1[0]1", "node101"),
            ("node01[0]10", "node01010"),
            ("x01[0-1]y01[0-1]z01[0-1]-ipmi", "x[010-011]y[010-011]z[010-011]-ipmi"),
            ("0[3-9/2]abc", "[03,05,07,09]abc"),
            ("0[3-9]abc", "[03-09]abc"),
            ("[3,5,7,9]0abc", "[30,50,70,90]abc"),
            ("[3-9]0abc", "[30,40,50,60,70,80,90]abc"),
            ("3abc0[1]0", "3abc010"),
            ("3abc16[1-4]56d", "3abc[16156,16256,16356,16456]d"),
            ("0[3,6,9]1abc16[1-4]56d", "[031,061,091]abc[16156,16256,16356,16456]d"),
            ("[01230-99999,100000-123100]L6", "[01230-99999,100000-123100]L6"),
            ("0123[000-100]L6", "[0123000-0123100]L6"),
            ("cluster[115-117,130,166-170]", "cluster[115-117,130,166-170]"),
            ("cluster3", "cluster3"),
            ("da[30,34-51,59-60]p[1-2],da[70-77]p3", "da[30,34-51,59-60]p[1-2],da[70-77]p3"),
            ("da[1-10]c[1-2]", "da[1-10]c[1-2]"),
            ("da[1-10]c[1-2]p", "da[1-10]c[1-2]p"),
            ("da[1-10]c[1-2]p0", "da[1-10]c[1-2]p0"),
            ("da[1-10]c[1-2,8]p0", "da[1-10]c[1-2,8]p0"),
            ("da[1-10]c3p0x3", "da[1-10]c3p0x3"),
            ("[1-7,10]xpc[3,4]p40_3,9xpc[3,4]p40_3,8xpc[3,4]p[40]_[3]", "[1-10]xpc[3-4]p40_3"),
            ("foo[3-100]bar[4-30]", "foo[3-100]bar[4-30]"),
            ("a[0-2]b[2-3]c[4-6],a[0-1]b[1-3]c[4-5]", "a[0-2]b[2-3]c[4-6],a[0-1]b1c[4-5]"),
            ("a[0-2]b[2-3]c[4-6],a[0-1]b[1-3]c[4-5],a2b1c[4-6]", "a[0-1]b[2-3]c[4-6],a2b[1-3]c[4-6],a[0-1]b1c[4-5]"),
            ("a[0-2]b[1-3]c[4],a[0-1]b[2-3]c[4-5]", "a[0-1]b[1-2]c4,a[0-1]b3c[4-5],a2b[1-3]c4,a[0-1]b2c5"),
            ("n1,n3,n5,p04,p07,p10,p13", "n[1,3,5],p[04,07,10,13]"),
            ("n09,n11", "n[09,11]"),
            ("n1,n3,n5,p03,p06,p09,p012,p015", "n[1,3,5],p[03,06,09,012,015]"),
            ("n1,n3,n5,p03,p06,p09", "n[1,3,5],p[03,06,09]"),
            ("n1,n03,n05", "n[1,03,05]"),
            ("n1,n03,n05,n07", "n[1,03,05,07]"),
            ("p1n4,p2x011,p1n6,p2x015,p1n2,p2x019,p1n0,p2x003", "p1n[0,2,4,6],p2x[003,011,015,019]"),
            ("a3b2c0,a2b3c1,a2b4c1,a1b2c0,a1b2c1,a3b2c1,a2b5c1", "a[1,3]b2c[0-1],a2b[3-5]c1"),
            (
                "n1c01,n1c02,n1c03,n1c04,n1c05,n1c06,n1c07,n1c08,n1c09,n2c01,n2c02,n2c03,n2c04,n2c05,n2c06,n2c07,n2c08,n2c09,n3c01,n3c02,n3c03,n3c04,n3c05,n3c06,n3c07,n3c08,n3c09,n4c01,n4c02,n4c03,n4c04,n4c05,n4c06,n4c07",
                "n[1-3]c[01-09],n4c[01-07]",
            ),
            (
                "n1c01,n1c02,n1c03,n1c04,n1c05,n1c06,n1c07,n1c08,n1c09,n2c01,n2c02,n2c03,n2c04,n2c05,n2c06,n2c07,n2c08,n2c09,n3c01,n3c02,n3c03,n3c04,n3c05,n3c06,n3c07,n3c08,n3c09,n4c01,n4c02,n4c03,n4c04,n4c05,n4c06,n4c07,n4c08,n4c09",
                "n[1-4]c[01-09]",
            ),
            ("3,5,[7-10,40]", "[3,5,7-10,40]"),
            ("nova3,nova4,5,nova6", "5,nova[3-4,6]"),
            ("nova3,nova4,[5-8],nova6", "[5-8],nova[3-4,6]"),
            ("[0-10]", "[0-10]"),
            ("prod-2[10-320]", "prod-[210-2320]"),
            // test_nd_fold: ClusterShell's n-D merge order, not "last axis first".
            ("da[2-3]c[1-2],da[3-4]c[3-4]", "da3c[1-4],da2c[1-2],da4c[3-4]"),
            ("da[2-3]c[1-2],da[3-4]c[2-3]", "da3c[1-3],da2c[1-2],da4c[2-3]"),
            ("da[2-3]c[1-2],da[3-4]c[1-2]", "da[2-4]c[1-2]"),
            ("da[2-3]c[1-2]p3,da[3-4]c[1-3]p3", "da[3-4]c[1-3]p3,da2c[1-2]p3"),
            ("da[2-3]c[1-2],da[2,5]c[2-3]", "da2c[1-3],da3c[1-2],da5c[2-3]"),
        ];
        for &(expr, folded) in cases {
            assert_eq!(fold(expr), folded, "{expr}");
        }
    }

    /// Multi-dimensional folds checked against ClusterShell 1.10.1's
    /// `nodeset -f`.
    #[test]
    fn multi_dimensional_folds() {
        let cases = [
            ("r[1-4]-n[01-40]", "r[1-4]-n[01-40]"),
            ("a1b1,a2b1,a2b2", "a[1-2]b1,a2b2"),
            ("a1b2,a2b1,a2b2", "a2b[1-2],a1b2"),
            ("r[1-4]-n[01-40]!r2-n07", "r[1,3-4]-n[01-40],r2-n[01-06,08-40]"),
            ("x[1-3]y[1-3]z[1-3]!x2y2z2", "x[1,3]y[1-3]z[1-3],x2y[1,3]z[1-3],x2y2z[1,3]"),
            ("rack[1-2]-node[01-40],rack3-node[01-20]", "rack[1-2]-node[01-40],rack3-node[01-20]"),
            ("c[1-3]-n[1-5]^c[2-4]-n[4-8]", "c[2-3]-n[1-3,6-8],c1-n[1-5],c4-n[4-8]"),
            ("r1-n1,r2-n2", "r1-n1,r2-n2"),
        ];
        for (expr, folded) in cases {
            assert_eq!(fold(expr), folded, "{expr}");
        }
        // The same set folds the same however it was written.
        let names = parsed("r[1-4]-n[01-40]").expand();
        assert_eq!(NodeSet::from_names(names.iter().rev()).fold(), "r[1-4]-n[01-40]");
    }

    #[test]
    fn syntax_basics() {
        assert_eq!(expand("node1"), "node1");
        assert_eq!(expand("n[1-3,7,10-12]"), "n1 n2 n3 n7 n10 n11 n12");
        assert_eq!(expand("n[1-10/3]"), "n1 n4 n7 n10");
        assert_eq!(expand("n[1-3]-ib[0-1]"), "n1-ib0 n1-ib1 n2-ib0 n2-ib1 n3-ib0 n3-ib1");
        assert_eq!(expand("r1-n2-c3"), "r1-n2-c3");
        assert_eq!(expand("n[9-11]"), "n9 n10 n11");
        assert_eq!(expand("n[098-101]"), "n098 n099 n100 n101");
        assert_eq!(expand("n1[0-2]"), "n10 n11 n12");
        assert_eq!(expand("n[1-2]0"), "n10 n20");
        assert_eq!(expand("[1-3]"), "1 2 3");
        assert_eq!(expand("n[1-2] , m1 "), "m1 n1 n2");
        assert_eq!(expand("n[ 1 - 2 , 5 ]"), "n1 n2 n5");
        assert_eq!(expand(""), "");
        assert_eq!(expand("  "), "");
        // Names with over 19 digits keep the long run as text.
        assert_eq!(fold("n123456789012345678901,n2"), "n2,n123456789012345678901");
        assert_eq!(fold("n9999999999999999999"), "n9999999999999999999");
        assert_eq!(fold("n%s"), "n%s");
        assert_eq!(fold("n%[1-2]"), "n%[1-2]");
    }

    #[test]
    fn padding_is_part_of_the_name() {
        let set = parsed("n1,n01,n001");
        assert_eq!(set.len(), 3);
        assert!(set.contains("n01"));
        assert!(!set.contains("n0001"));
        assert_eq!(fold("n1,n01,n001,n2,n02,n10,n100"), "n[1-2,01-02,10,001,100]");
        assert_eq!(fold("n9,n10,n08,n09"), "n[9,08-10]");
        assert_eq!(fold("n0,n00,n000,n1"), "n[0-1,00,000]");
        assert_eq!(expand("n9,n10,n08,n09"), "n9 n08 n09 n10");
        // ClusterShell's run-splitting quirks (checked against 1.10.1).
        assert_eq!(fold("a079,a[199-1001]"), "a[079,199-999,1000-1001]");
        assert_eq!(fold("a[99-101],a059"), "a[99,059,100-101]");
        assert_eq!(fold("n[098-100],n[101-1002]"), "n[098-999,1000-1002]");
        assert_eq!(fold("n[01-03,05,07,100-1001]"), "n[01-03,05,07,100-1001]");
        assert_eq!(fold("n[08-10,100-1000]"), "n[08-10,100-1000]");
    }

    #[test]
    fn operators_apply_left_to_right() {
        assert_eq!(fold("a,b!a"), "b");
        assert_eq!(fold("n[1-4]!n2,n9&n[2-9]"), "n[3-4,9]");
        assert_eq!(fold("n[1-4]&n[3-6]"), "n[3-4]");
        assert_eq!(fold("n[1-4]^n[3-6]"), "n[1-2,5-6]");
        assert_eq!(fold("n[1-3] ! n2"), "n[1,3]");
        assert_eq!(fold("n1!n1"), "");
        assert_eq!(fold("m[1-2]&n[1-2]"), "");
        assert_eq!(fold("n[1-5]!n1,n9!n2^n3&n[1-20]"), "n[4-5,9]");
        assert_eq!(fold("n[1-5]!n1!n2,n1!n5"), "n[1,3-4]");
    }

    #[test]
    fn set_operations_and_queries() {
        let a = parsed("n[1-10],m1");
        let b = parsed("n[5-15]");
        assert_eq!(a.union(&b).fold(), "m1,n[1-15]");
        assert_eq!(a.intersection(&b).fold(), "n[5-10]");
        assert_eq!(a.difference(&b).fold(), "m1,n[1-4]");
        assert_eq!(a.symmetric_difference(&b).fold(), "m1,n[1-4,11-15]");
        assert_eq!(a.len(), 11);
        assert!(!a.is_empty());
        assert!(NodeSet::new().is_empty());
        assert!(a.contains("m1") && a.contains("n10") && !a.contains("n11"));
        assert!(!a.contains("n") && !a.contains(""));
        assert_eq!(a.to_string(), "m1,n[1-10]");
        assert_eq!("n[1-2]".parse::<NodeSet>(), Ok(parsed("n2,n1")));
        assert_eq!(NodeSet::parse("n[1-2]"), Ok(parsed("n2,n1")));
        let missing = ["n3".to_owned(), "n1".to_owned()];
        let from_strs = NodeSet::from_names(missing.iter().map(String::as_str));
        assert_eq!(from_strs.fold(), "n[1,3]");
        let collected: NodeSet = ["n2", "n1", "", "n2"].into_iter().collect();
        assert_eq!(collected.expand(), ["n1", "n2"]);
        assert_eq!(format!("{collected:?}"), "NodeSet(\"n[1-2]\")");
    }

    #[test]
    fn iteration_is_sorted_like_clustershell() {
        assert_eq!(parsed("n10,n9,n09,n1,m2,n-1,n,n1a").expand(), ["m2", "n", "n1", "n9", "n09", "n10", "n1a", "n-1"]);
        assert_eq!(expand("a1b2,a2b1,a2b2,a1b1"), "a1b1 a1b2 a2b1 a2b2");
        assert_eq!(expand("x[10-11]y[2,10]"), "x10y2 x10y10 x11y2 x11y10");
    }

    #[test]
    fn groups_resolve_through_the_caller() {
        let groups = BTreeMap::from([
            ("oss".to_owned(), "node[40-45]".to_owned()),
            ("mds".to_owned(), "node[46-47]".to_owned()),
            ("lustre".to_owned(), "@oss,@mds".to_owned()),
            ("io1".to_owned(), "node[40-41]".to_owned()),
            ("io2".to_owned(), "node[42-43]".to_owned()),
            ("io3".to_owned(), "node[44-45]".to_owned()),
            ("slurm:gpu".to_owned(), "gpu[1-4]".to_owned()),
            ("loop".to_owned(), "n1,@loop2".to_owned()),
            ("loop2".to_owned(), "@loop".to_owned()),
            ("broken".to_owned(), "n[1-".to_owned()),
        ]);
        let resolve = |g: &str| groups.get(g).cloned();
        let with = |expr: &str| parse_with(expr, &resolve);
        assert_eq!(with("@oss").unwrap().fold(), "node[40-45]");
        assert_eq!(with("@lustre!@mds").unwrap().fold(), "node[40-45]");
        assert_eq!(with("@io[1-3]").unwrap().fold(), "node[40-45]");
        assert_eq!(with("@io[1-3]!@io2").unwrap().fold(), "node[40-41,44-45]");
        assert_eq!(with("@slurm:gpu,n1").unwrap().fold(), "gpu[1-4],n1");
        assert_eq!(with("n1,@nope"), Err(NodeSetError::UnknownGroup { name: "nope".into(), column: 4 }));
        assert_eq!(error("@oss").to_string(), "unknown group @oss at column 1");
        let cycle = with("@loop").unwrap_err();
        assert!(matches!(&cycle, NodeSetError::InGroup { name, .. } if name == "loop"));
        let broken = with("@broken").unwrap_err();
        assert_eq!(broken.to_string(), "invalid definition of group @broken");
        let source = std::error::Error::source(&broken).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("unbalanced '[' at column 2: it has no matching ']'"));
    }

    #[test]
    fn errors_say_what_and_where() {
        use NodeSetError::*;
        let cases: Vec<(&str, NodeSetError)> = vec![
            ("n[1-3", UnclosedBracket { column: 2 }),
            ("n1-3]", UnopenedBracket { column: 5 }),
            ("n[1-2]]", UnopenedBracket { column: 7 }),
            ("n[[1-2]", NestedBracket { column: 3 }),
            ("n[1-2][3-4]", AdjacentBrackets { column: 7 }),
            ("n[1-2]5[3-4]", AdjacentBrackets { column: 8 }),
            ("n1,,n2", MissingOperand { op: ',', column: 3 }),
            (",n1", MissingOperand { op: ',', column: 1 }),
            ("n1!", MissingOperand { op: '!', column: 3 }),
            ("n1 & ", MissingOperand { op: '&', column: 4 }),
            ("n[]", EmptyRange { column: 2 }),
            ("n[1,]", EmptyRange { column: 5 }),
            ("ab[5-2]", ReversedRange { text: "5-2".into(), column: 4 }),
            ("n[a-b]", InvalidRange { text: "a-b".into(), column: 3 }),
            ("n[1--2]", InvalidRange { text: "1--2".into(), column: 3 }),
            ("n[1-2-3]", InvalidRange { text: "1-2-3".into(), column: 3 }),
            ("n[1 2]", InvalidRange { text: "1 2".into(), column: 3 }),
            ("n[1-10/0]", InvalidStep { text: "1-10/0".into(), column: 3 }),
            ("n[1-10/x]", InvalidStep { text: "1-10/x".into(), column: 3 }),
            ("n[1/2]", InvalidStep { text: "1/2".into(), column: 3 }),
            ("n[01-1]", PaddingMismatch { text: "01-1".into(), column: 3 }),
            ("n[1-010]", PaddingMismatch { text: "1-010".into(), column: 3 }),
            ("n0[1-10]", PaddingMismatch { text: "01-010".into(), column: 2 }),
            ("n[-2-3]", NegativeIndex { text: "-2-3".into(), column: 3 }),
            ("n[1-10/2]0", StepWithTrailingDigits { column: 2 }),
            ("n[12345678901234567890]", NumberTooLarge { column: 3 }),
            ("n12[234567890123456789]", NumberTooLarge { column: 2 }),
            ("x,@foo", UnknownGroup { name: "foo".into(), column: 3 }),
        ];
        for (expr, want) in cases {
            assert_eq!(error(expr), want, "{expr}");
        }
        // Columns count characters, not bytes.
        assert_eq!(error("né[2-1]"), ReversedRange { text: "2-1".into(), column: 4 });
        assert_eq!(error("n[5-2]").to_string(), "invalid range 5-2 at column 3: the start is greater than the end");
        assert_eq!(error("n[1-3").to_string(), "unbalanced '[' at column 2: it has no matching ']'");
        assert_eq!(error("n[]").to_string(), "empty range at column 2");
        assert_eq!(error("n[1-3").column(), Some(2));
    }

    #[test]
    fn huge_expansions_are_refused() {
        // Counted before anything is allocated.
        let too_large = |e: NodeSetError| matches!(e, NodeSetError::TooLarge { .. });
        assert!(too_large(error("n[1-10000001]")));
        assert!(too_large(error("n[0-9999999999999999999]")));
        assert!(too_large(error("n[1-9000000,1-9000000]")));
        assert!(too_large(error("a[1-10000]b[1-10000]")));
        assert!(too_large(error("a[1-10000]b[1-10000]c[1-10000]d[1-10000]e[1-10000]")));

        // The same checks on sets built from several terms, with a small limit.
        let groups = |g: &str| (g == "big").then(|| "n[1-60]".to_owned());
        let with_limit = |expr: &str| {
            let mut parser = Parser::new(Some(&groups));
            parser.limit = 100;
            parser.expr(expr).map(|set| set.len())
        };
        let over = |column| Err(NodeSetError::TooLarge { limit: 100, column });
        assert_eq!(with_limit("n[1-100]"), Ok(100));
        assert_eq!(with_limit("n[1-101]"), over(3));
        assert_eq!(with_limit("a[1-60],b[1-60]"), over(9));
        assert_eq!(with_limit("a[1-60],a[1-60],a[41-100]"), Ok(100));
        assert_eq!(with_limit("a[1-60]^b[1-60]"), over(9));
        assert_eq!(with_limit("@big,@big"), Ok(60));
        assert_eq!(with_limit("@big,x[1-60]"), over(6));
        assert_eq!(with_limit("a[1-11]b[1-10]"), over(1));
        // Counted exactly only at the end, after a merge under the limit.
        assert_eq!(with_limit("a[1-90],a[1-90],b[1-5],c[1-10]"), over(24));
        assert_eq!(with_limit("a[1-90],a[1-90],b[1-5],c[1-5]"), Ok(100));
        assert_eq!(with_limit("n[1-100]!m[1-60]!m[1-60]!n[1-10]"), Ok(90));
        assert_eq!(with_limit("n[1-100]!m[1-60]!o[1-60]"), over(18));

        // Indexes: at most 300 with a limit of 100 names.
        assert_eq!(with_limit("n[1-100]x1y2"), Ok(100));
        assert_eq!(with_limit("n[1-76]x1y2z3"), over(1));
        assert_eq!(with_limit("n[1-75]x1y2z3"), Ok(75));
        assert_eq!(with_limit("n[1-50]x1y2z3,m[1-26]x1y2z3"), over(15));
        assert_eq!(with_limit("n[1-50]x1y2z3!m[1-26]x1y2z3"), Ok(50));
        assert_eq!(with_limit("a,b,c,n[1-97]"), Ok(100));
    }

    /// The input the `nodeset` fuzz target found: 10 million names of ten
    /// numbers each (2 GB) from 31 characters.
    #[test]
    fn names_with_many_numbers_are_refused_before_they_fill_memory() {
        let e = error("n[1-9999999]x1x2x3x4x5x6x7x8x9");
        assert!(matches!(e, NodeSetError::TooLarge { column: 1, .. }), "{e}");
        assert!(e.to_string().contains("more than 30000000 numbers"), "{e}");
        assert_eq!(parsed("n[1-100000]x1x2x3x4x5x6x7x8x9").len(), 100_000);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        const ALPHABET: &[u8] = b"n0123456789[]-,/!&^@ %x\t";
        let mut rng = Rng(0x5eed);
        for _ in 0..20_000 {
            let len = rng.below(16) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize]).collect();
            let mut expr = String::from_utf8(bytes).expect("ASCII");
            if rng.below(8) == 0 {
                expr.push('é');
            }
            if let Ok(set) = parse_with(&expr, &|g| (g == "g").then(|| "n[1-3]".into())) {
                let folded = set.fold();
                if !expr.contains(['@', ' ', '\t']) {
                    assert_eq!(parsed(&folded), set, "{expr:?} folded to {folded:?}");
                }
            }
        }
    }

    /// Rounds of each property test (fewer in unoptimised builds).
    const ROUNDS: usize = if cfg!(debug_assertions) { 300 } else { 3_000 };

    /// A random set: names of a few patterns with 0 to 3 dimensions, indexes
    /// from small domains (so that folding has work to do), some zero-padded.
    fn random_set(rng: &mut Rng) -> NodeSet {
        const PATTERNS: &[&[&str]] = &[&["node"], &["n", ""], &["r", "-n", ""], &["a", "b", "c", "-ipmi"], &["", "x"]];
        let count = rng.below(60);
        let names: Vec<String> = (0..count)
            .map(|_| {
                let pattern = PATTERNS[rng.below(PATTERNS.len() as u64) as usize];
                let mut name = pattern[0].to_owned();
                for literal in &pattern[1..] {
                    let value = rng.below(12);
                    match rng.below(6) {
                        0 => name.push_str(&format!("{value:02}")),
                        1 => name.push_str(&format!("{value:03}")),
                        _ => name.push_str(&value.to_string()),
                    }
                    name.push_str(literal);
                }
                name
            })
            .collect();
        let set = NodeSet::from_names(&names);
        assert!(names.iter().all(|n| set.contains(n)));
        set
    }

    #[test]
    fn property_fold_then_parse_is_identity() {
        let mut rng = Rng(1);
        for _ in 0..ROUNDS {
            let set = random_set(&mut rng);
            let folded = set.fold();
            let back = parsed(&folded);
            assert_eq!(back, set, "{folded}");
            assert_eq!(back.expand(), set.expand());
            assert_eq!(NodeSet::from_names(set.expand()), set);
            assert_eq!(set.iter().count(), set.len());
        }
    }

    #[test]
    fn property_algebra_laws() {
        let mut rng = Rng(2);
        for _ in 0..ROUNDS {
            let (a, b, c) = (random_set(&mut rng), random_set(&mut rng), random_set(&mut rng));
            assert_eq!(a.union(&b), b.union(&a));
            assert_eq!(a.intersection(&b), b.intersection(&a));
            assert!(a.difference(&b).intersection(&b).is_empty());
            assert_eq!(a.symmetric_difference(&b), a.union(&b).difference(&a.intersection(&b)));
            assert_eq!(a.union(&b).union(&c), a.union(&b.union(&c)));
            assert_eq!(a.intersection(&b.union(&c)), a.intersection(&b).union(&a.intersection(&c)));
            assert_eq!(a.union(&b).len() + a.intersection(&b).len(), a.len() + b.len());
            // The expression operators agree with the methods. A folded set
            // is a union of disjoint terms, so `A!b1!b2` is `A \ B` and
            // `A^b1^b2` is `A ^ B`.
            if !a.is_empty() && !b.is_empty() {
                let b_folded = b.fold();
                let terms = top_level_terms(&b_folded);
                for (op, want) in [("!", a.difference(&b)), ("^", a.symmetric_difference(&b)), (",", a.union(&b))] {
                    let expr = format!("{}{op}{}", a.fold(), terms.join(op));
                    assert_eq!(parsed(&expr), want, "{expr}");
                }
            }
        }
    }

    /// Splits a folded set at its commas outside brackets.
    fn top_level_terms(folded: &str) -> Vec<&str> {
        let mut terms = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in folded.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                ',' if depth == 0 => {
                    terms.push(&folded[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        terms.push(&folded[start..]);
        terms
    }

    /// The sizes of `kiln bench nodeset` (docs/performance.md). No timing here; run
    /// `cargo test --release` to see that they are fast.
    #[test]
    fn large_sets_fold() {
        let one = NodeSet::from_names((1..=100_000).map(|i| format!("node{i}")));
        assert_eq!(one.fold(), "node[1-100000]");

        let names: Vec<String> = (1..=100).flat_map(|r| (1..=1000).map(move |n| format!("r{r}-n{n}"))).collect();
        let two = NodeSet::from_names(names.iter().rev());
        assert_eq!(two.len(), 100_000);
        assert_eq!(two.fold(), "r[1-100]-n[1-1000]");

        let mut rng = Rng(3);
        let scattered =
            NodeSet::from_names((0..10_000).map(|_| format!("a-{}-b-{}-c", rng.below(10_000), rng.below(10_000))));
        let folded = scattered.fold();
        assert_eq!(parsed(&folded), scattered);

        let holes = NodeSet::from_names(names.iter().enumerate().filter(|(i, _)| i % 7 != 0).map(|(_, n)| n));
        assert_eq!(parsed(&holes.fold()), holes);
    }
}
