//! What can be wrong with a node set expression, and where.
//!
//! Parsing never panics: every problem is a [`NodeSetError`] that says what is
//! wrong and the 1-based column (in characters, not bytes) of the offending
//! character, so an operator can find it in a long expression.

use super::parse::INDEXES_PER_NAME;

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

/// The 1-based column, in characters, of the byte offset `byte` of `text`.
pub(super) fn column(text: &str, byte: usize) -> usize {
    text.get(..byte).map_or(byte, |s| s.chars().count()) + 1
}

#[cfg(test)]
mod tests {
    use super::super::test_support::error;
    use super::*;

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
}
