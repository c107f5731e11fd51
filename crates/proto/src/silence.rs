//! Silences' matcher operators between the domain and the wire, for intake's service and the
//! CLI alike.

use firebreak_domain::silence::MatchOp;

use crate::v1::MatchOperator;

/// An operator as the wire carries it.
pub fn op_wire(op: MatchOp) -> MatchOperator {
    match op {
        MatchOp::Equal => MatchOperator::Equal,
        MatchOp::NotEqual => MatchOperator::NotEqual,
        MatchOp::Regex => MatchOperator::Regex,
        MatchOp::NotRegex => MatchOperator::NotRegex,
    }
}

/// A wire operator as the domain's; `None` for unspecified or one this build does not know.
pub fn wire_op(op: i32) -> Option<MatchOp> {
    match MatchOperator::try_from(op).ok()? {
        MatchOperator::Equal => Some(MatchOp::Equal),
        MatchOperator::NotEqual => Some(MatchOp::NotEqual),
        MatchOperator::Regex => Some(MatchOp::Regex),
        MatchOperator::NotRegex => Some(MatchOp::NotRegex),
        MatchOperator::Unspecified => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operator_crosses_the_wire_and_back() {
        for op in [
            MatchOp::Equal,
            MatchOp::NotEqual,
            MatchOp::Regex,
            MatchOp::NotRegex,
        ] {
            assert_eq!(wire_op(op_wire(op).into()), Some(op));
        }
        assert_eq!(wire_op(0), None);
        assert_eq!(wire_op(99), None);
    }
}
