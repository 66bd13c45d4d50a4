//! One line per figure with its target and verdict, and the exit rule: the harness
//! fails (CI) only when a *ratio* misses its target by more than 2×.

use std::fmt::Write as _;

/// Verdict of one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Meets the target.
    Pass,
    /// Misses the target.
    Fail,
    /// A ratio missing its target by more than 2×: the run fails.
    FailHard,
    /// Information only (no target).
    Info,
}

/// Which way a target goes.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// Value must be at least the target.
    AtLeast(f64),
    /// Value must be at most the target.
    AtMost(f64),
}

impl Goal {
    fn met(self, v: f64, slack: f64) -> bool {
        match self {
            Goal::AtLeast(t) => v >= t / slack,
            Goal::AtMost(t) => v <= t * slack,
        }
    }
}

/// Verdict of a plain (non-ratio) figure.
pub fn judge(v: f64, goal: Goal) -> Verdict {
    if goal.met(v, 1.0) {
        Verdict::Pass
    } else {
        Verdict::Fail
    }
}

/// Verdict of a ratio figure (FailHard beyond 2×).
pub fn judge_ratio(v: f64, goal: Goal) -> Verdict {
    if goal.met(v, 1.0) {
        Verdict::Pass
    } else if goal.met(v, 2.0) {
        Verdict::Fail
    } else {
        Verdict::FailHard
    }
}

/// Collected figure lines.
#[derive(Default)]
pub struct Report {
    /// `(line, verdict)` in print order.
    lines: Vec<(String, Verdict)>,
}

impl Report {
    /// Prints and records one figure line.
    pub fn figure(&mut self, id: &str, what: &str, value: String, target: &str, verdict: Verdict) {
        let v = match verdict {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::FailHard => "FAIL (ratio off by > 2x)",
            Verdict::Info => "info",
        };
        let line = format!("[{id}] {what}: {value} | target {target} | {v}");
        println!("{line}");
        self.lines.push((line, verdict));
    }

    /// Whether any ratio missed its target by more than 2×.
    pub fn hard_failures(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(_, v)| *v == Verdict::FailHard)
            .map(|(l, _)| l.as_str())
            .collect()
    }

    /// All lines as text.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for (l, _) in &self.lines {
            let _ = writeln!(s, "{l}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_fails_hard_only_beyond_twice_the_target() {
        assert_eq!(judge_ratio(0.6, Goal::AtLeast(0.5)), Verdict::Pass);
        assert_eq!(judge_ratio(0.3, Goal::AtLeast(0.5)), Verdict::Fail);
        assert_eq!(judge_ratio(0.2, Goal::AtLeast(0.5)), Verdict::FailHard);
        assert_eq!(judge_ratio(2.9, Goal::AtMost(1.5)), Verdict::Fail);
        assert_eq!(judge_ratio(3.1, Goal::AtMost(1.5)), Verdict::FailHard);
        assert_eq!(judge(200.0, Goal::AtMost(150.0)), Verdict::Fail);
    }
}
