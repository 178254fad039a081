//! Set algebra: union, intersection, difference and symmetric difference.
//!
//! Patterns are ordered and each pattern's tuples are sorted and unique, so
//! every operation is one merge walk over both sets, linear in their sizes,
//! with a `Keep` saying which parts survive. Many sets are united pairwise in
//! rounds (`union_all`), which parsing uses for long runs of unions and of
//! differences.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::pattern::Tuples;
use super::set::NodeSet;

impl NodeSet {
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
    pub(super) fn union_all(mut sets: Vec<NodeSet>) -> NodeSet {
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

impl Tuples {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{ROUNDS, Rng, parsed, random_set};

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
}
