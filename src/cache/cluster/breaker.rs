//! Per-node circuit breakers: a hung node fails at once instead of costing every call its budget.
//!
//! A frozen master (SIGSTOP, a stalled host, a partition without RST) keeps its TCP connection
//! open, so each call to it waits out `REDIS_TIMEOUT_MS` before it is a miss; a dead one fails in
//! microseconds. After `REDIS_BREAKER_AFTER_FAILURES` consecutive calls to one node found it
//! unreachable (timed out, or an I/O error), its breaker opens; and at the first timeout when the
//! node has answered nothing since that call was sent: a node silent for a whole budget with a call
//! waiting hangs, where a slow call beside answered ones is only slow, and a request whose call
//! timed out would otherwise call the node again (a page look-up, then its posts) before the
//! timeouts of the calls sent just after its own were counted, and pay a second budget. The price:
//! a healthy node that pauses for a whole budget with a single call waiting opens too, and its keys
//! are read from PostgreSQL for one open period. Open, calls to it fail at once, as a miss
//! (reads are served by PostgreSQL, writes skip it and the retry and drop machinery repairs what
//! they missed), for `REDIS_BREAKER_OPEN_MS` plus up to half as much again at random, so that
//! instances and nodes do not probe in step. Then one call goes through (half-open): an answer
//! closes the breaker, another failure opens it again. A node that answers, even with an error
//! (`MOVED`, `TRYAGAIN` ...), is reachable, and resets the count.
//!
//! A small state machine of our own rather than the `failsafe` crate: the service needs a breaker
//! per node with its state readable (metrics, the live view), the half-open period limited to one
//! call, and time and jitter passed in so that tests drive it without sleeping. `failsafe`'s
//! `StateMachine` keeps its clock and its instrumentation inside, admits calls by a success-rate
//! policy, and would wrap every call of the transport in its own futures; those few states are
//! shorter to write and to test here than to adapt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::{Metrics, BREAKER_STATES};

/// Share of the open period added at random, at most: instances that opened their breakers on the
/// same freeze probe at different moments.
pub(super) const OPEN_JITTER: f64 = 0.5;

/// What a breaker is doing, as the metrics and the live view name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once until the open period ends.
    Open,
    /// The open period ended: the next call (one at a time) decides.
    HalfOpen,
}

impl BreakerState {
    /// The `state` label value.
    pub(super) fn label(self) -> &'static str {
        let [closed, open, half_open] = BREAKER_STATES;
        match self {
            Self::Closed => closed,
            Self::Open => open,
            Self::HalfOpen => half_open,
        }
    }
}

/// How a call may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// An ordinary call.
    Call,
    /// The one call of the half-open state: its outcome closes or reopens the breaker.
    Probe,
    /// Refused: fail at once.
    Reject,
}

/// Whether a timeout says anything about its node: one whose timer fired more than half a budget
/// late (`elapsed` since the call was sent, against its `budget`) shows that this process was not
/// running (a starved host, a stalled runtime), and every call in flight to every node times out
/// together then; counting those would open the breakers of healthy nodes and send their reads to
/// PostgreSQL all at once.
pub(super) fn timeout_is_evidence(elapsed: Duration, budget: Duration) -> bool {
    elapsed <= budget + budget / 2
}

/// What a call found out about its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The node answered (a value or a Redis error).
    Answered,
    /// The connection failed (refused, reset).
    Failed,
    /// No answer within the call's budget.
    TimedOut,
}

/// The breaker's settings.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// Consecutive unreachable calls that open the breaker; 0 never opens it.
    pub(super) after_failures: u32,
    /// Shortest open period; up to [`OPEN_JITTER`] of it is added at random.
    pub(super) open_for: Duration,
    /// How long a probe may stay unanswered (its caller gave up, say) before another call probes.
    pub(super) probe_budget: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing_since: Instant },
}

/// One node's breaker. Time (`now`, `sent`) and the jitter draw (`draw`, in `[0, 1)`) are
/// passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Breaker {
    state: State,
    /// When the node last answered a call.
    last_answer: Option<Instant>,
}

impl Breaker {
    pub(super) const fn new() -> Self {
        Self {
            state: State::Closed { failures: 0 },
            last_answer: None,
        }
    }

    /// The state as reported: an open period that has ended shows as half-open (the next call
    /// probes), whether or not a call has come since.
    pub(super) fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go to the node now.
    pub(super) fn admit(&mut self, now: Instant, policy: &Policy) -> Admission {
        match self.state {
            State::Closed { .. } => Admission::Call,
            State::Open { until } if now < until => Admission::Reject,
            State::HalfOpen { probing_since } if now < probing_since + policy.probe_budget => {
                Admission::Reject
            }
            State::Open { .. } | State::HalfOpen { .. } => {
                self.state = State::HalfOpen { probing_since: now };
                Admission::Probe
            }
        }
    }

    /// Records the outcome of a call sent at `sent`.
    pub(super) fn record(
        &mut self,
        call: (Admission, Outcome, Instant),
        now: Instant,
        draw: f64,
        policy: &Policy,
    ) {
        let (admission, outcome, sent) = call;
        let jitter = 1.0 + OPEN_JITTER * draw.clamp(0.0, 1.0);
        let reopen = State::Open {
            until: now + policy.open_for.mul_f64(jitter),
        };
        let silent_since_sent = self.last_answer.is_none_or(|at| at < sent);
        if outcome == Outcome::Answered {
            self.last_answer = Some(now);
        }
        self.state = match (self.state, admission, outcome) {
            (State::Closed { .. }, _, Outcome::Answered) => State::Closed { failures: 0 },
            (State::Closed { failures }, _, _) => {
                let failures = failures.saturating_add(1);
                let hung = outcome == Outcome::TimedOut && silent_since_sent;
                if policy.after_failures > 0 && (failures >= policy.after_failures || hung) {
                    reopen
                } else {
                    State::Closed { failures }
                }
            }
            // Any answer while half-open shows the node is back; only the probe's failure reopens.
            (State::HalfOpen { .. }, _, Outcome::Answered) => State::Closed { failures: 0 },
            (State::HalfOpen { .. }, Admission::Probe, _) => reopen,
            // A call sent before the breaker opened, landing late, changes nothing.
            (state, _, _) => state,
        };
    }
}

/// The breakers of every node the topology has named; the set is bounded by the cluster's nodes.
pub(super) struct Breakers {
    policy: Policy,
    nodes: Mutex<HashMap<String, Breaker>>,
}

impl Breakers {
    pub(super) fn new(policy: Policy) -> Self {
        Self {
            policy,
            nodes: Mutex::new(HashMap::new()),
        }
    }

    /// Starts tracking `node` (closed), once the topology names it, with its series created.
    pub(super) fn track(&self, node: &str, metrics: &Metrics) {
        let now = Instant::now();
        let state = {
            let mut nodes = super::lock(&self.nodes);
            nodes
                .entry(node.to_owned())
                .or_insert_with(Breaker::new)
                .state(now)
        };
        metrics.breaker_state_is(node, state.label());
    }

    /// Whether a call to `node` may go now; a node never named by the topology always may.
    pub(super) fn admit(&self, node: &str, metrics: &Metrics) -> Admission {
        let now = Instant::now();
        let (admission, state) = {
            let mut nodes = super::lock(&self.nodes);
            let Some(breaker) = nodes.get_mut(node) else {
                return Admission::Call;
            };
            (breaker.admit(now, &self.policy), breaker.state(now))
        };
        match admission {
            Admission::Reject => {
                metrics
                    .redis_breaker_rejections
                    .with_label_values(&[node])
                    .inc();
            }
            Admission::Probe => metrics.breaker_state_is(node, state.label()),
            Admission::Call => {}
        }
        admission
    }

    /// Records the outcome of a call `admit` let through at `sent`, and publishes a change of state.
    pub(super) fn record(
        &self,
        node: &str,
        call: (Admission, Outcome, Instant),
        metrics: &Metrics,
    ) {
        let now = Instant::now();
        let change = {
            let mut nodes = super::lock(&self.nodes);
            let Some(breaker) = nodes.get_mut(node) else {
                return;
            };
            let before = breaker.state;
            breaker.record(call, now, rand::random(), &self.policy);
            (breaker.state != before).then(|| (before, breaker.state(now)))
        };
        let Some((before, state)) = change else {
            return;
        };
        if state == BreakerState::Open {
            metrics.redis_breaker_opens.with_label_values(&[node]).inc();
            if matches!(before, State::Closed { .. }) {
                tracing::warn!(node, "Redis node unreachable; its breaker is open (calls to it fail at once, reads are served from PostgreSQL)");
            }
        } else if state == BreakerState::Closed && !matches!(before, State::Closed { .. }) {
            tracing::info!(node, "Redis node answers again; its breaker is closed");
        }
        metrics.breaker_state_is(node, state.label());
    }

    /// Publishes every breaker's state as of now (an open period that ended shows as half-open).
    pub(super) fn publish(&self, metrics: &Metrics) {
        let now = Instant::now();
        let states: Vec<(String, BreakerState)> = super::lock(&self.nodes)
            .iter()
            .map(|(node, breaker)| (node.clone(), breaker.state(now)))
            .collect();
        for (node, state) in states {
            metrics.breaker_state_is(&node, state.label());
        }
    }

    /// Every tracked node whose breaker is not closed.
    pub(super) fn not_closed(&self) -> Vec<(String, BreakerState)> {
        let now = Instant::now();
        let mut nodes: Vec<(String, BreakerState)> = super::lock(&self.nodes)
            .iter()
            .map(|(node, breaker)| (node.clone(), breaker.state(now)))
            .filter(|(_, state)| *state != BreakerState::Closed)
            .collect();
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        after_failures: 3,
        open_for: Duration::from_millis(500),
        probe_budget: Duration::from_millis(200),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A breaker opened at `at` by three refused connections, with the jitter draw `draw`.
    fn opened(at: Instant, draw: f64) -> Breaker {
        let mut breaker = Breaker::new();
        for _ in 0..3 {
            assert_eq!(breaker.admit(at, &POLICY), Admission::Call);
            breaker.record((Admission::Call, Outcome::Failed, at), at, draw, &POLICY);
        }
        breaker
    }

    /// A closed breaker whose node answered a call at `at`.
    fn answered_at(at: Instant) -> Breaker {
        let mut breaker = Breaker::new();
        breaker.record((Admission::Call, Outcome::Answered, at), at, 0.0, &POLICY);
        breaker
    }

    #[test]
    fn opens_after_the_configured_consecutive_failures_and_not_before() {
        let t0 = Instant::now();
        let mut breaker = answered_at(t0);
        for n in 1..3 {
            breaker.record((Admission::Call, Outcome::Failed, t0), t0, 0.0, &POLICY);
            assert_eq!(
                breaker.state(t0),
                BreakerState::Closed,
                "after {n} failures"
            );
        }
        breaker.record((Admission::Call, Outcome::Failed, t0), t0, 0.0, &POLICY);
        assert_eq!(breaker.state(t0), BreakerState::Open);
    }

    #[test]
    fn an_answer_resets_the_count_of_consecutive_failures() {
        let t0 = Instant::now();
        let mut breaker = answered_at(t0);
        let outcomes = [
            Outcome::Failed,
            Outcome::Failed,
            Outcome::Answered,
            Outcome::Failed,
            Outcome::Failed,
        ];
        for outcome in outcomes {
            breaker.record((Admission::Call, outcome, t0), t0, 0.0, &POLICY);
        }
        assert_eq!(breaker.state(t0), BreakerState::Closed);
    }

    #[test]
    fn a_timeout_with_no_answer_from_the_node_since_the_call_was_sent_opens_at_once() {
        let t0 = Instant::now();
        let mut breaker = answered_at(t0);
        let sent = t0 + ms(1);
        breaker.record(
            (Admission::Call, Outcome::TimedOut, sent),
            sent + ms(100),
            0.0,
            &POLICY,
        );
        assert_eq!(breaker.state(sent + ms(100)), BreakerState::Open);
    }

    #[test]
    fn a_timeout_beside_answered_calls_counts_as_one_failure() {
        let t0 = Instant::now();
        let mut breaker = answered_at(t0);
        // Sent at t0, timed out at 100 ms; the node answered another call at 50 ms: slow, not hung.
        breaker.record(
            (Admission::Call, Outcome::Answered, t0),
            t0 + ms(50),
            0.0,
            &POLICY,
        );
        breaker.record(
            (Admission::Call, Outcome::TimedOut, t0),
            t0 + ms(100),
            0.0,
            &POLICY,
        );
        assert_eq!(breaker.state(t0 + ms(100)), BreakerState::Closed);
    }

    #[test]
    fn an_open_breaker_rejects_every_call_until_its_period_ends() {
        let t0 = Instant::now();
        let mut breaker = opened(t0, 0.0);
        for after in [0, 1, 250, 499] {
            assert_eq!(
                breaker.admit(t0 + ms(after), &POLICY),
                Admission::Reject,
                "{after} ms after opening"
            );
        }
        assert_eq!(breaker.state(t0 + ms(500)), BreakerState::HalfOpen);
    }

    #[test]
    fn the_open_period_is_jittered_by_up_to_half_of_it() {
        let t0 = Instant::now();
        // The draw 0 gives the shortest period, a draw near 1 the longest, 0.5 between.
        let cases = [(0.0, 500), (0.5, 625), (0.999_999, 750)];
        for (draw, open_ms) in cases {
            let breaker = opened(t0, draw);
            assert_eq!(
                breaker.state(t0 + ms(open_ms - 1)),
                BreakerState::Open,
                "draw {draw}: still open 1 ms before {open_ms} ms"
            );
            assert_eq!(
                breaker.state(t0 + ms(open_ms)),
                BreakerState::HalfOpen,
                "draw {draw}: half-open at {open_ms} ms"
            );
        }
    }

    #[test]
    fn half_open_lets_a_single_probe_through() {
        let t0 = Instant::now();
        let mut breaker = opened(t0, 0.0);
        let t1 = t0 + ms(500);
        assert_eq!(breaker.admit(t1, &POLICY), Admission::Probe);
        for after in [0, 10, 199] {
            assert_eq!(
                breaker.admit(t1 + ms(after), &POLICY),
                Admission::Reject,
                "a second call {after} ms into the probe"
            );
        }
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced_after_its_budget() {
        let t0 = Instant::now();
        let mut breaker = opened(t0, 0.0);
        let t1 = t0 + ms(500);
        assert_eq!(breaker.admit(t1, &POLICY), Admission::Probe);
        assert_eq!(breaker.admit(t1 + ms(200), &POLICY), Admission::Probe);
    }

    #[test]
    fn a_successful_probe_closes_the_breaker() {
        let t0 = Instant::now();
        let mut breaker = opened(t0, 0.0);
        let t1 = t0 + ms(500);
        let probe = breaker.admit(t1, &POLICY);
        breaker.record((probe, Outcome::Answered, t1), t1 + ms(1), 0.0, &POLICY);
        assert_eq!(breaker.state(t1 + ms(1)), BreakerState::Closed);
        assert_eq!(breaker.admit(t1 + ms(2), &POLICY), Admission::Call);
    }

    #[test]
    fn a_failed_probe_reopens_the_breaker_for_a_new_period() {
        let t0 = Instant::now();
        let mut breaker = opened(t0, 0.0);
        let t1 = t0 + ms(500);
        let probe = breaker.admit(t1, &POLICY);
        let t2 = t1 + ms(100);
        breaker.record((probe, Outcome::TimedOut, t1), t2, 0.0, &POLICY);
        assert_eq!(breaker.state(t2), BreakerState::Open);
        assert_eq!(breaker.admit(t2 + ms(499), &POLICY), Admission::Reject);
        assert_eq!(breaker.admit(t2 + ms(500), &POLICY), Admission::Probe);
    }

    #[test]
    fn a_late_failure_of_a_call_sent_before_the_breaker_opened_changes_nothing() {
        let t0 = Instant::now();
        let mut breaker = opened(t0, 0.0);
        let late = (Admission::Call, Outcome::TimedOut, t0);
        breaker.record(late, t0 + ms(400), 0.0, &POLICY);
        assert_eq!(breaker.state(t0 + ms(500)), BreakerState::HalfOpen);
        let t1 = t0 + ms(500);
        let probe = breaker.admit(t1, &POLICY);
        breaker.record(late, t1, 0.0, &POLICY);
        assert_eq!(breaker.admit(t1 + ms(1), &POLICY), Admission::Reject);
        breaker.record((probe, Outcome::Answered, t1), t1 + ms(2), 0.0, &POLICY);
        assert_eq!(breaker.state(t1 + ms(2)), BreakerState::Closed);
    }

    #[test]
    fn a_timeout_that_fired_late_is_no_evidence_against_the_node() {
        let budget = ms(100);
        assert!(timeout_is_evidence(ms(100), budget));
        assert!(timeout_is_evidence(ms(150), budget));
        assert!(!timeout_is_evidence(ms(151), budget));
        assert!(!timeout_is_evidence(ms(400), budget));
    }

    #[test]
    fn every_state_has_its_own_label_of_the_metric() {
        let labels = [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ]
        .map(BreakerState::label);
        assert_eq!(labels, BREAKER_STATES);
    }

    #[test]
    fn zero_failures_configured_never_opens() {
        let policy = Policy {
            after_failures: 0,
            ..POLICY
        };
        let t0 = Instant::now();
        let mut breaker = Breaker::new();
        for _ in 0..100 {
            breaker.record((Admission::Call, Outcome::TimedOut, t0), t0, 0.0, &policy);
        }
        assert_eq!(breaker.admit(t0, &policy), Admission::Call);
    }
}
