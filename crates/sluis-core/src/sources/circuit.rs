//! A circuit breaker per source: after `failures` consecutive failed look-ups it opens,
//! and look-ups fail at once without a call; after `open_for` one probe is let through,
//! which closes it again on success. It recovers without a restart.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed {
        consecutive: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everything else fails fast until it reports.
    HalfOpen,
}

#[derive(Debug)]
pub struct Circuit {
    state: State,
    failures: u32,
    open_for: Duration,
}

/// Whether a call may be made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Call,
    /// The one probe of a half-open circuit.
    Probe,
    Refuse,
}

impl Circuit {
    pub fn new(failures: u32, open_for: Duration) -> Circuit {
        Circuit {
            state: State::Closed { consecutive: 0 },
            failures: failures.max(1),
            open_for,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed { .. } => Admit::Call,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                Admit::Probe
            }
            State::Open { .. } | State::HalfOpen => Admit::Refuse,
        }
    }

    /// A look-up's result (after retries). Returns whether the circuit is open now.
    pub fn report(&mut self, ok: bool, now: Instant) -> bool {
        self.state = match (self.state, ok) {
            (_, true) => State::Closed { consecutive: 0 },
            (State::Closed { consecutive }, false) if consecutive + 1 < self.failures => {
                State::Closed {
                    consecutive: consecutive + 1,
                }
            }
            (_, false) => State::Open {
                until: now + self.open_for,
            },
        };
        matches!(self.state, State::Open { .. })
    }

    /// A probe that ended without a verdict (cancelled): let the next look-up probe.
    pub fn abandon_probe(&mut self, now: Instant) {
        if self.state == State::HalfOpen {
            self.state = State::Open { until: now };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_recovers_after_a_probe() {
        let t0 = Instant::now();
        let mut c = Circuit::new(3, Duration::from_secs(10));
        assert!(!c.report(false, t0));
        assert!(!c.report(true, t0), "a success resets the count");
        assert!(!c.report(false, t0));
        assert!(!c.report(false, t0));
        assert_eq!(c.admit(t0), Admit::Call);
        assert!(c.report(false, t0), "third consecutive failure opens");
        assert_eq!(c.admit(t0 + Duration::from_secs(5)), Admit::Refuse);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(c.admit(later), Admit::Probe);
        assert_eq!(c.admit(later), Admit::Refuse, "only one probe");
        assert!(c.report(false, later), "a failed probe opens again");
        let later = later + Duration::from_secs(10);
        assert_eq!(c.admit(later), Admit::Probe);
        assert!(!c.report(true, later));
        assert_eq!(c.admit(later), Admit::Call);
    }
}
