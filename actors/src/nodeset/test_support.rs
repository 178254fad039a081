//! Shorthands shared by the node set tests of every module: parsing that
//! panics with the expression, and a deterministic generator of random sets
//! for the property tests.

use super::{NodeSet, NodeSetError, parse};

pub(super) fn parsed(expr: &str) -> NodeSet {
    parse(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"))
}

pub(super) fn fold(expr: &str) -> String {
    parsed(expr).fold()
}

pub(super) fn expand(expr: &str) -> String {
    parsed(expr).expand().join(" ")
}

pub(super) fn error(expr: &str) -> NodeSetError {
    match parse(expr) {
        Ok(set) => panic!("{expr:?} parsed as {set:?}"),
        Err(e) => e,
    }
}

/// A small deterministic generator (xorshift64*), so property tests need no
/// extra dependency and always run the same cases.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Rounds of each property test (fewer in unoptimised builds).
pub(super) const ROUNDS: usize = if cfg!(debug_assertions) { 300 } else { 3_000 };

/// A random set: names of a few patterns with 0 to 3 dimensions, indexes
/// from small domains (so that folding has work to do), some zero-padded.
pub(super) fn random_set(rng: &mut Rng) -> NodeSet {
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
