//! loadgen's own cost, and whether it, not the service, set the rate of a run.
//!
//! A load generator on the same cores as the service can be the slower of the two: then a closed
//! loop's "maximum" is the client's, and a ratio of two sides that both sit at the client's ceiling
//! says nothing about them. So every run measures what loadgen spent: the CPU of its process
//! (`getrusage`: user + system seconds, per response), how busy its runtime's threads were (the
//! time they spent running tasks, against the phase's length times the number of threads), and how
//! long its threads waited for a core while runnable (Linux's `/proc/self/task/*/schedstat`): on a
//! machine whose cores the service, its databases or anything else keep busy, a client that
//! wants a core and waits for it is as much the limit as one that uses it. The report says
//! plainly when those show that loadgen was the limit.

use std::time::Duration;

use serde::Serialize;

/// Past this share of the run with loadgen's threads busy (or, closed loop, this share of a core
/// per thread used), loadgen is taken to have set the rate: the service answered faster than
/// loadgen could ask.
pub const BOUND_SHARE: f64 = 0.75;

/// A snapshot of loadgen's CPU: the process's, and its runtime's threads' busy time.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    user: Duration,
    system: Duration,
    /// Time the runtime's worker threads spent running tasks, summed over the threads.
    busy: Duration,
    /// Time the process's threads spent runnable but waiting for a core, summed over them.
    waited: Duration,
    threads: usize,
}

impl CpuSample {
    /// Reads the process's CPU times and, inside a Tokio runtime, its workers' busy time.
    pub fn now() -> Self {
        let (user, system) = process_cpu();
        let (busy, threads) =
            tokio::runtime::Handle::try_current().map_or((Duration::ZERO, 0), |handle| {
                let metrics = handle.metrics();
                let threads = metrics.num_workers();
                let busy = (0..threads)
                    .map(|worker| metrics.worker_total_busy_duration(worker))
                    .sum();
                (busy, threads)
            });
        Self {
            user,
            system,
            busy,
            waited: run_queue_wait(),
            threads,
        }
    }
}

/// What loadgen spent on the measured phase, and the verdict on who set its rate.
#[derive(Debug, Clone, Serialize)]
pub struct ClientLoad {
    /// User CPU seconds of loadgen's process during the phase.
    pub user_cpu_secs: f64,
    /// System CPU seconds of loadgen's process during the phase.
    pub sys_cpu_secs: f64,
    /// (user + system) CPU per response, in microseconds.
    pub cpu_us_per_request: f64,
    /// (user + system) CPU seconds per second of the phase: cores in use on average.
    pub cores_used: f64,
    /// Worker threads of loadgen's runtime (`--threads`).
    pub threads: usize,
    /// Share of the phase its threads spent running tasks, over all of them (0 to 1).
    pub busy_share: f64,
    /// Seconds its threads were runnable but waiting for a core (0 where the kernel does not say).
    pub run_queue_wait_secs: f64,
    /// (user + system CPU + run-queue wait) over the phase times the threads, at most 1: the share
    /// of the run loadgen's threads were running or wanted to.
    pub demand_share: f64,
    /// Whether loadgen, not the service, set the rate of this run.
    pub client_bound: bool,
    /// The verdict, in a sentence.
    pub verdict: String,
}

impl ClientLoad {
    /// loadgen's cost between two samples bracketing a phase of `elapsed` with `responses`
    /// answers; `closed` for a closed loop.
    pub fn between(
        before: &CpuSample,
        after: &CpuSample,
        elapsed: Duration,
        responses: u64,
        closed: bool,
    ) -> Self {
        let user = after.user.saturating_sub(before.user).as_secs_f64();
        let sys = after.system.saturating_sub(before.system).as_secs_f64();
        let secs = elapsed.as_secs_f64();
        let threads = after.threads;
        let busy = after.busy.saturating_sub(before.busy).as_secs_f64();
        let busy_share = if secs > 0.0 && threads > 0 {
            (busy / (secs * threads as f64)).min(1.0)
        } else {
            0.0
        };
        let waited = after.waited.saturating_sub(before.waited).as_secs_f64();
        let demand_share = if secs > 0.0 && threads > 0 {
            ((user + sys + waited) / (secs * threads as f64)).min(1.0)
        } else {
            0.0
        };
        let cores_used = if secs > 0.0 { (user + sys) / secs } else { 0.0 };
        let shares = Shares {
            busy: busy_share,
            demand: demand_share,
            cores: cores_used,
        };
        let (client_bound, verdict) = verdict(closed, shares, threads);
        Self {
            user_cpu_secs: user,
            sys_cpu_secs: sys,
            cpu_us_per_request: if responses == 0 {
                0.0
            } else {
                1e6 * (user + sys) / responses as f64
            },
            cores_used,
            threads,
            busy_share,
            run_queue_wait_secs: waited,
            demand_share,
            client_bound,
            verdict,
        }
    }
}

/// What a phase's samples say about loadgen's threads.
#[derive(Debug, Clone, Copy)]
pub struct Shares {
    /// Share of the run its threads spent running tasks.
    pub busy: f64,
    /// Share of the run its threads were running or waiting for a core.
    pub demand: f64,
    /// Cores its process used on average.
    pub cores: f64,
}

/// Who set the rate: loadgen when its threads were busy most of the run (at or past
/// [`BOUND_SHARE`]); when they were running or waiting for a core that long (the machine's CPU,
/// which the service shares, held loadgen back); or, closed loop, when its process used about a
/// core per thread (a closed loop runs as fast as the slower side, so a client at a core per
/// thread is that side).
pub fn verdict(closed: bool, shares: Shares, threads: usize) -> (bool, String) {
    const ADVICE: &str = "measure the maximum with a lighter client (wrk) or more --threads";
    let plural = if threads == 1 {
        "thread was"
    } else {
        "threads were"
    };
    let busy = format!(
        "its {threads} {plural} busy {:.0}% of the run",
        100.0 * shares.busy
    );
    let bound = |why: String| {
        (
            true,
            format!("CLIENT-BOUND: loadgen, not the service, set this rate ({why}); {ADVICE}"),
        )
    };
    if threads == 0 {
        return (
            false,
            "loadgen's threads are unknown: no verdict".to_owned(),
        );
    }
    if shares.busy >= BOUND_SHARE {
        return bound(busy);
    }
    if shares.demand >= BOUND_SHARE {
        return bound(format!(
            "its {threads} {plural} running or waiting for a core {:.0}% of the run",
            100.0 * shares.demand
        ));
    }
    if closed && shares.cores >= BOUND_SHARE * threads as f64 {
        let unit = if threads == 1 { "thread" } else { "threads" };
        return bound(format!(
            "closed loop with its process at {:.2} cores for {threads} {unit}",
            shares.cores
        ));
    }
    (
        false,
        format!(
            "the service set this rate: loadgen used {:.2} cores, {busy}, running or waiting for a \
             core {:.0}%",
            shares.cores,
            100.0 * shares.demand
        ),
    )
}

/// Time this process's threads have spent runnable but not running, from Linux's schedstat
/// (`/proc/self/task/<tid>/schedstat`: run time, run-queue wait, time slices, in nanoseconds).
/// Zero where the kernel does not provide it. Threads that ended are no longer counted, so a
/// difference of two readings can only undercount.
fn run_queue_wait() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// User and system CPU time of this process so far.
fn process_cpu() -> (Duration, Duration) {
    // SAFETY: getrusage writes into the struct it is given and reads nothing else; an all-zero
    // rusage is a valid value of that plain C struct.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return (Duration::ZERO, Duration::ZERO);
        }
        usage
    };
    let time = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec.max(0) as u64)
            + Duration::from_micros(tv.tv_usec.max(0) as u64)
    };
    (time(usage.ru_utime), time(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(busy: f64, demand: f64, cores: f64) -> Shares {
        Shares {
            busy,
            demand,
            cores,
        }
    }

    #[test]
    fn who_set_the_rate_is_judged_from_busy_threads_their_wait_and_cores() {
        // (closed loop, busy share, running-or-waiting share, cores used, threads, bound, why)
        let cases = [
            (
                true,
                0.95,
                0.97,
                0.97,
                1,
                true,
                "a thread busy 95% of the run",
            ),
            (
                false,
                0.80,
                0.85,
                0.85,
                1,
                true,
                "open loop, busy past the bound",
            ),
            (
                true,
                0.60,
                0.90,
                0.33,
                1,
                true,
                "a third of a core, waiting for one the rest",
            ),
            (
                false,
                0.50,
                0.80,
                0.30,
                1,
                true,
                "open loop, waiting for a core",
            ),
            (
                true,
                0.40,
                0.50,
                0.90,
                1,
                true,
                "closed loop at about a core per thread",
            ),
            (true, 0.40, 0.80, 1.60, 2, true, "two threads, 1.6 cores"),
            (
                false,
                0.40,
                0.50,
                0.90,
                1,
                false,
                "open loop: cores alone do not bind",
            ),
            (
                true,
                0.30,
                0.40,
                0.35,
                1,
                false,
                "a thread mostly waiting on the service",
            ),
            (
                true,
                0.74,
                0.74,
                1.40,
                2,
                false,
                "two threads, 0.7 of a core each",
            ),
            (
                true,
                0.0,
                0.0,
                0.0,
                0,
                false,
                "outside a runtime nothing is known",
            ),
        ];
        for (closed, busy, demand, cores, threads, bound, why) in cases {
            let (got, sentence) = verdict(closed, shares(busy, demand, cores), threads);
            assert_eq!(got, bound, "{why}: {sentence}");
            assert_eq!(
                sentence.starts_with("CLIENT-BOUND"),
                bound,
                "{why}: {sentence}"
            );
        }
    }

    #[test]
    fn the_verdict_says_which_side_set_the_rate_in_plain_words() {
        let (_, bound) = verdict(true, shares(0.9, 0.95, 0.95), 1);
        assert_eq!(
            bound,
            "CLIENT-BOUND: loadgen, not the service, set this rate (its 1 thread was busy 90% of \
             the run); measure the maximum with a lighter client (wrk) or more --threads"
        );
        let (_, waited) = verdict(true, shares(0.6, 0.9, 0.33), 1);
        assert!(
            waited.contains("(its 1 thread was running or waiting for a core 90% of the run)"),
            "{waited}"
        );
        let (_, free) = verdict(true, shares(0.2, 0.3, 0.25), 2);
        assert_eq!(
            free,
            "the service set this rate: loadgen used 0.25 cores, its 2 threads were busy 20% of \
             the run, running or waiting for a core 30%"
        );
    }

    #[test]
    fn the_cost_of_a_phase_is_the_difference_of_two_samples() {
        let before = CpuSample {
            user: Duration::from_millis(500),
            system: Duration::from_millis(100),
            busy: Duration::from_millis(200),
            waited: Duration::from_millis(100),
            threads: 2,
        };
        let after = CpuSample {
            user: Duration::from_millis(1_300),
            system: Duration::from_millis(500),
            busy: Duration::from_millis(3_400),
            waited: Duration::from_millis(900),
            threads: 2,
        };

        let load = ClientLoad::between(&before, &after, Duration::from_secs(2), 10_000, true);

        assert!((load.user_cpu_secs - 0.8).abs() < 1e-9);
        assert!((load.sys_cpu_secs - 0.4).abs() < 1e-9);
        assert!((load.cpu_us_per_request - 120.0).abs() < 1e-6, "{load:?}");
        assert!((load.cores_used - 0.6).abs() < 1e-9);
        assert!(
            (load.busy_share - 0.8).abs() < 1e-9,
            "3.2 s busy of 2 x 2 s"
        );
        assert!(load.client_bound, "{load:?}");
    }

    #[test]
    fn a_sample_inside_a_runtime_sees_its_threads() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(3)
            .build()
            .expect("a runtime");
        let sample = runtime.block_on(async { CpuSample::now() });
        assert_eq!(sample.threads, 3);
        assert!(sample.user + sample.system > Duration::ZERO, "{sample:?}");
    }
}
