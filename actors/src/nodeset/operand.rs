//! One operand of an expression (its text between operators): a pattern and
//! the product of its bracket ranges.
//!
//! Digits next to a bracket join its range, rewritten as ClusterShell
//! does: trailing digits are appended to each bound with a matching step
//! (`n[1-2]0` is `n[10-20/10]`), leading digits are prefixed to the bounds of
//! each contiguous run (`n1[0-20]` is `n[10-120]`, and `n0[1-10]` is the invalid
//! `n[01-010]`). A range and a product are counted against the limit before
//! they are expanded.

use super::error::{NodeSetError, column};
use super::fold::{push_run, runs};
use super::index::{MAX_DIGITS, digit_count, digits_ordinal, encode, is_padded};
use super::parse::INDEXES_PER_NAME;
use super::pattern::{Pattern, Tuples, push_key_text};

/// Parses one operand (no operators; brackets balanced) into its pattern and
/// index tuples.
pub(super) fn pattern_term(
    text: &str,
    start: usize,
    end: usize,
    limit: usize,
) -> Result<(Pattern, Tuples), NodeSetError> {
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
