//! Index ordinals: a digit string as one `u64`.
//!
//! An index is a digit string, not a number. `n1` and `n01` are different
//! nodes, and ClusterShell (1.9 and later) keeps both apart in one range set
//! (`n[1,01]`). Each digit string is encoded as one `u64` *ordinal*
//! `offset(width) + value`, which orders indexes the way ClusterShell sorts
//! them: shorter strings first, then by value (`9 < 08 < 10 < 001`). Digit runs
//! are limited to 19 digits so that the ordinal fits a `u64`; a longer run in a
//! plain name is kept as literal text, one in a bracket range is an error.

use std::cmp::Ordering;
use std::fmt::Write as _;

/// Longest digit run that is an index (its ordinal must fit in a `u64`).
pub(super) const MAX_DIGITS: usize = 19;

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
pub(super) fn encode(width: usize, value: u64) -> u64 {
    debug_assert!((1..=MAX_DIGITS).contains(&width) && value < POW10[width]);
    OFFSET[width] + value
}

/// `(width, value)` of an ordinal.
pub(super) fn decode(ord: u64) -> (usize, u64) {
    let width = OFFSET[1..=MAX_DIGITS].partition_point(|&o| o <= ord);
    (width, ord - OFFSET[width])
}

pub(super) fn digit_count(value: u64) -> usize {
    POW10[1..].partition_point(|&p| p <= value) + 1
}

/// Whether the digit string has a leading zero (ClusterShell's "padded").
pub(super) fn is_padded(width: usize, value: u64) -> bool {
    width > digit_count(value)
}

/// Compares the digit strings of two ordinals as strings, as Python does.
pub(super) fn string_cmp(a: u64, b: u64) -> Ordering {
    let ((wa, va), (wb, vb)) = (decode(a), decode(b));
    let m = wa.min(wb);
    (va / POW10[wa - m]).cmp(&(vb / POW10[wb - m])).then(wa.cmp(&wb))
}

pub(super) fn push_digits(out: &mut String, value: u64, width: usize) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{value:0width$}");
}

/// The ordinal of a run of ASCII digits, if it is short enough to be an index.
pub(super) fn digits_ordinal(digits: &str) -> Option<u64> {
    if digits.is_empty() || digits.len() > MAX_DIGITS {
        return None;
    }
    digits.parse::<u64>().ok().map(|v| encode(digits.len(), v))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{expand, fold, parsed};

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
}
