//! A name split into its pattern and its tuple of indexes, and the sorted
//! tuples of one pattern.
//!
//! A name is a pattern plus a tuple of indexes. `r12-n03` is the pattern
//! `r%s-n%s` with the indexes `12` and `03`. Every maximal run of ASCII digits
//! is one dimension. A set stores, per pattern, a sorted flat vector of index
//! tuples: 100,000 names of one pattern cost 800 KB per dimension and no
//! per-name allocation, and union, intersection and differences (`algebra`)
//! are linear merges of sorted runs.

use std::cmp::Ordering;

use super::index::{decode, digits_ordinal, push_digits};

/// A name with its digit runs taken out. `key` is ClusterShell's format
/// string (`%s` per dimension, `%` doubled), which orders patterns as
/// ClusterShell does; `literals` are the texts around the dimensions.
#[derive(Clone, Debug)]
pub(super) struct Pattern {
    pub(super) key: String,
    pub(super) literals: Vec<String>,
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
    pub(super) fn from_key(key: String) -> Pattern {
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

    pub(super) fn dims(&self) -> usize {
        self.literals.len() - 1
    }

    pub(super) fn name(&self, tuple: &[u64]) -> String {
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

pub(super) fn push_key_text(key: &mut String, text: &str) {
    for c in text.chars() {
        if c == '%' {
            key.push('%');
        }
        key.push(c);
    }
}

/// Splits a plain name into its pattern key and index ordinals.
pub(super) fn split_name(name: &str, key: &mut String, idx: &mut Vec<u64>) {
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

/// The index tuples of one pattern: `count` tuples of `dims` ordinals, sorted
/// and unique, flattened. A pattern without digits has `dims == 0` and
/// `count == 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Tuples {
    pub(super) dims: usize,
    pub(super) count: usize,
    pub(super) flat: Vec<u64>,
}

impl Tuples {
    pub(super) fn tuple(&self, i: usize) -> &[u64] {
        &self.flat[i * self.dims..(i + 1) * self.dims]
    }

    pub(super) fn from_unsorted(dims: usize, flat: Vec<u64>) -> Tuples {
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

    pub(super) fn contains(&self, tuple: &[u64]) -> bool {
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
}
