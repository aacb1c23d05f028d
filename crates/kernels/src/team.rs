//! A team of threads that spin between jobs, for the products of a decoding step.
//!
//! A decoding step is ~50 matrix products of 50–300 µs each, with a little element-wise work
//! between them. Handed to rayon, each product wakes a sleeping worker and puts the caller to
//! sleep until it is done: two trips through the scheduler per product, ~9% of a bf16 greedy
//! step here. The team's helpers instead spin for a while after each job, so the next one
//! starts on every core at once, and the caller takes tasks too. A helper idle for
//! [`SPIN`] parks until the next job, so an idle process burns no CPU.
//!
//! One caller at a time holds the team; a second concurrent caller (or one on a rayon worker,
//! whose pool may be busy) gets rayon instead.

use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

/// How long a helper spins for the next job before it parks.
const SPIN: Duration = Duration::from_millis(2);

/// Runs every CPU kernel, and Burn's CPU backend, on `threads` threads: the global rayon pool
/// and the decoding team follow it. Call it before any CPU work; it fails once the pool exists.
pub fn set_threads(threads: usize) -> Result<(), rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()
}

/// The threads the CPU kernels run on (the global rayon pool's size).
pub fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Runs `task(i)` for every `i` in `0..tasks`, on all cores, and returns when all are done.
pub fn for_each(tasks: usize, task: &(dyn Fn(usize) + Sync)) {
    let team = Team::get();
    // A poisoned lock only says an earlier job's task panicked, which its caller was told.
    let held = match team.filter(|_| rayon::current_thread_index().is_none()).map(|t| t.owner.try_lock()) {
        Some(Ok(held)) => Some(held),
        Some(Err(TryLockError::Poisoned(held))) => Some(held.into_inner()),
        _ => None,
    };
    match (team, held) {
        (Some(team), Some(_held)) if tasks > 1 && tasks < 1 << 16 => team.run(tasks, task),
        _ => (0..tasks).into_par_iter().for_each(task),
    }
}

/// `task(i)` for every `i` in `0..tasks`, run as [`for_each`] runs them, in order of `i`.
pub fn map<T: Send>(tasks: usize, task: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let slots: Vec<Mutex<Option<T>>> = (0..tasks).map(|_| Mutex::new(None)).collect();
    for_each(tasks, &|i| {
        let value = task(i);
        *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
    });
    slots.into_iter().map(|slot| slot.into_inner().unwrap_or_else(|e| e.into_inner()).expect("team::map: every task ran")).collect()
}

/// The job being run: the function that runs one of its tasks.
struct Job<'a> {
    task: &'a (dyn Fn(usize) + Sync),
}

struct Team {
    /// Held by the caller whose job the team runs.
    owner: Mutex<()>,
    /// The job of the current generation (a `*const Job`, valid while a task of it runs).
    job: AtomicUsize,
    /// `generation << 32 | tasks << 16 | next task index`: a task is claimed by moving the
    /// index on, so a claim can only succeed for the generation it read.
    claim: AtomicU64,
    /// Tasks of the current job finished.
    done: AtomicUsize,
    /// The first panic of a task of the current job, raised again in its caller.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
    /// Helpers parked, and where they park.
    parked: AtomicUsize,
    bell: (Mutex<()>, Condvar),
}

impl Team {
    /// The process's team: one helper per thread of the rayon pool beside the caller's (one per
    /// core unless `RAYON_NUM_THREADS` or `--threads` says otherwise); none on one thread.
    fn get() -> Option<&'static Team> {
        static TEAM: OnceLock<Option<&'static Team>> = OnceLock::new();
        *TEAM.get_or_init(|| Team::start(threads() - 1))
    }

    /// A team of `helpers` threads, which live as long as the process.
    fn start(helpers: usize) -> Option<&'static Team> {
        if helpers == 0 {
            return None;
        }
        let team: &'static Team = Box::leak(Box::new(Team {
            owner: Mutex::new(()),
            job: AtomicUsize::new(0),
            claim: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            panic: Mutex::new(None),
            parked: AtomicUsize::new(0),
            bell: (Mutex::new(()), Condvar::new()),
        }));
        for i in 0..helpers {
            std::thread::Builder::new().name(format!("prefix-tune-team-{i}")).spawn(move || team.help()).ok()?;
        }
        Some(team)
    }

    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        assert!(tasks < 1 << 16, "team::for_each: {tasks} tasks, at most 65535");
        let job = Job { task };
        let generation = ((self.claim.load(SeqCst) >> 32) + 1) & 0xffff_ffff; // wraps after 2³² jobs
        self.done.store(0, SeqCst);
        self.job.store(&job as *const Job as usize, SeqCst);
        self.claim.store(generation << 32 | (tasks as u64) << 16, SeqCst);
        if self.parked.load(SeqCst) > 0 {
            let _bell = self.bell.0.lock().unwrap_or_else(|e| e.into_inner());
            self.bell.1.notify_all();
        }
        self.work(generation);
        // `job` lives on this stack: return only once every task has finished.
        while self.done.load(SeqCst) < tasks {
            std::hint::spin_loop();
        }
        if let Some(panic) = self.panic.lock().unwrap_or_else(|e| e.into_inner()).take() {
            std::panic::resume_unwind(panic);
        }
    }

    /// Claims and runs tasks of `generation` until none is left.
    fn work(&self, generation: u64) {
        loop {
            let claim = self.claim.load(SeqCst);
            let (tasks, index) = ((claim >> 16) & 0xffff, claim & 0xffff);
            if claim >> 32 != generation || index >= tasks {
                return;
            }
            if self.claim.compare_exchange(claim, claim + 1, SeqCst, SeqCst).is_ok() {
                // SAFETY: the job of this generation was published before its claims, and it
                // outlives them: its caller waits until the task claimed here is done.
                let job = unsafe { &*(self.job.load(SeqCst) as *const Job) };
                // A panicking task still counts as done, and its panic goes to the caller.
                if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.task)(index as usize))) {
                    self.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(panic);
                }
                self.done.fetch_add(1, SeqCst);
            }
        }
    }

    fn help(&self) {
        let mut seen = 0;
        loop {
            let generation = self.wait_for_next(seen);
            self.work(generation);
            seen = generation;
        }
    }

    /// Spins until a generation after `seen` is published, parking after [`SPIN`].
    fn wait_for_next(&self, seen: u64) -> u64 {
        let generation = || self.claim.load(SeqCst) >> 32;
        let start = Instant::now();
        let mut spins = 0u32;
        while generation() == seen {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % 256 == 0 && start.elapsed() > SPIN {
                let mut bell = self.bell.0.lock().unwrap_or_else(|e| e.into_inner());
                self.parked.fetch_add(1, SeqCst);
                while generation() == seen {
                    bell = self.bell.1.wait(bell).unwrap_or_else(|e| e.into_inner());
                }
                self.parked.fetch_sub(1, SeqCst);
            }
        }
        generation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_across_jobs_and_callers() {
        let counts: Vec<AtomicUsize> = (0..97).map(|_| AtomicUsize::new(0)).collect();
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let counts = &counts;
                move || {
                    for round in 0..200 {
                        let tasks = 1 + round % 97;
                        for_each(tasks, &|i| {
                            counts[i].fetch_add(1, SeqCst);
                        });
                    }
                }
            })
            .collect();
        std::thread::scope(|s| {
            for t in threads {
                s.spawn(t);
            }
        });
        let expected: Vec<usize> = (0..97).map(|i| 3 * (0..200).filter(|r| 1 + r % 97 > i).count()).collect();
        assert_eq!(counts.iter().map(|c| c.load(SeqCst)).collect::<Vec<_>>(), expected);
        // After a pause the helpers have parked, and a job still runs.
        std::thread::sleep(SPIN * 2);
        let sum = AtomicUsize::new(0);
        for_each(10, &|i| {
            sum.fetch_add(i, SeqCst);
        });
        assert_eq!(sum.load(SeqCst), 45);
    }

    #[test]
    fn a_task_that_panics_fails_its_caller_after_the_other_tasks_and_the_team_goes_on() {
        let team = Team::start(2).expect("threads start");
        let finished = AtomicUsize::new(0);
        let outcome = std::panic::catch_unwind(|| {
            team.run(8, &|i| {
                assert!(i != 3, "task 3 fails");
                std::thread::sleep(Duration::from_millis(1));
                finished.fetch_add(1, SeqCst);
            })
        });
        assert!(outcome.is_err());
        assert_eq!(finished.load(SeqCst), 7);
        let sum = AtomicUsize::new(0);
        team.run(5, &|i| {
            sum.fetch_add(i, SeqCst);
        });
        assert_eq!(sum.load(SeqCst), 10);
    }
}
