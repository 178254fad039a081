//! [`NodeSet`]: the set type, built from names, and its queries.
//!
//! A set maps each pattern to the sorted tuples of its names (`pattern`).
//! This module builds one from names and answers size, membership and
//! iteration. The set operations (`algebra`) and the folded text (`fold`)
//! are `impl NodeSet` blocks of their own modules.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use super::error::NodeSetError;
use super::parse::{parse, parse_with};
use super::pattern::{Pattern, Tuples, split_name};

/// A set of node names. See the module documentation for the representation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NodeSet {
    pub(super) by_pattern: BTreeMap<Pattern, Tuples>,
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
    /// measure of the set's memory that [`INDEXES_PER_NAME`](super::INDEXES_PER_NAME) limits.
    pub(super) fn indexes(&self) -> usize {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{expand, parsed};
    use super::*;

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
}
