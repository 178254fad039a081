//! Folding of multi-dimensional patterns: ClusterShell's `RangeSetND` merge.
//!
//! A multi-dimensional set that is a full cartesian product folds to that
//! product (`r[1-4]-n[01-40]`). Any other one is folded by ClusterShell's own
//! `RangeSetND` merge: sort the vectors, merge neighbours that differ in one
//! dimension, then all pairs, repeated until nothing changes. That is not
//! simply "fold the last axis, then merge equal ranges": `a1b1,a2b1,a2b2` folds
//! to `a[1-2]b1,a2b2`. The output matches ClusterShell's, order included.
//! ClusterShell's all-pairs pass is quadratic (hundreds of seconds on 10,000
//! scattered 2-D names); here each vector finds its partners through a sorted
//! index keyed by a hash of "all dimensions but one", which yields the same
//! partner in the same order, so the same result comes in milliseconds.

use std::cmp::Ordering;

use super::index::string_cmp;
use super::pattern::Tuples;

/// One folded n-D term: a product of one index set per dimension.
#[derive(Clone, Debug)]
pub(super) struct Vector {
    /// Sorted ordinals per dimension.
    pub(super) sets: Vec<Vec<u64>>,
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
pub(super) fn fold_vectors(tuples: &Tuples) -> Vec<Vector> {
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

#[cfg(test)]
mod tests {
    use super::super::NodeSet;
    use super::super::test_support::{fold, parsed};

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
}
