//! Node set expressions: operators, groups and the limits on a set's size.
//!
//! Parsing never panics and never explodes. Every error says what is wrong
//! and the 1-based column (in characters) of the offending character. A range or
//! a product is counted before it is expanded, and a set over [`MAX_NODES`]
//! names is refused. Runs of unions and of differences are merged together,
//! pairwise in rounds, so a 10,000-term folded set parses in milliseconds. Groups are resolved
//! through a caller-supplied function, each group once per parse, and a group
//! that includes itself is an error rather than a stack overflow.
//!
//! Here an expression is cut at its operators and evaluated left to right;
//! each operand's own text (bracket ranges) is read by `operand`.

use std::collections::{BTreeMap, HashMap};

use super::error::{NodeSetError, column};
use super::operand::pattern_term;
use super::set::NodeSet;

/// Largest number of names a node set may hold; parsing a larger one fails
/// with [`NodeSetError::TooLarge`] before it allocates.
pub const MAX_NODES: usize = 10_000_000;

/// Indexes (numbers in names) a set may hold per name of [`MAX_NODES`], on
/// average: 10 million names of up to 3 numbers each, or fewer names with
/// more. Without it a 60-character expression (`n[1-9999999]x1x2…x9`) built a
/// set of 2 GB (found by the `nodeset` fuzz target).
pub const INDEXES_PER_NAME: usize = 3;

/// Deepest nesting of groups inside group definitions.
const MAX_GROUP_DEPTH: usize = 64;

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

#[cfg(test)]
mod tests {
    use super::super::test_support::{Rng, error, expand, fold, parsed};
    use super::*;

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
}
