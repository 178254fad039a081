//! The folded text of a set, as `nodeset -f` prints it, and as `nodeset -r`
//! prints it with groups.
//!
//! Folding reproduces `nodeset -f`, and was checked against ClusterShell
//! 1.10.1 on tens of thousands of random expressions and sets. Patterns come in
//! the order of ClusterShell's format strings (`n` < `n%s` < `n%s-ipmi` <
//! `node%s`). One-dimensional sets fold as ClusterShell's `RangeSet` does:
//! runs of consecutive values broken by padding changes (`n[9,08-10]`), steps
//! never written (its `autostep` is off by default). Multi-dimensional sets are
//! cut into product vectors by `fold_nd`; each vector is written here, one
//! `RangeSet` per dimension. Parsing borrows `runs` too: ClusterShell rewrites
//! the digits before a bracket through the range's runs.

use super::fold_nd::fold_vectors;
use super::index::{decode, is_padded, push_digits};
use super::pattern::{Pattern, Tuples};
use super::set::NodeSet;

impl NodeSet {
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
}

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
pub(super) fn runs(ords: &[u64]) -> Vec<(u64, u64, usize)> {
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
pub(super) fn push_run(out: &mut String, lead: &str, (first, last, pad): (u64, u64, usize)) {
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

#[cfg(test)]
mod tests {
    use super::super::NodeSet;
    use super::super::test_support::{ROUNDS, Rng, fold, parsed, random_set};

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
