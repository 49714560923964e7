//! Handing calls to worker threads. The worker that became idle last gets the
//! next call: its runtimes are the warmest, so a quiet app keeps hitting one
//! warm worker instead of cold-starting its module on each in turn. A call
//! that finds every worker busy waits in a queue all workers take from.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::Job;

/// Worker indexes, the one that became idle last at the end.
type IdleWorkers = Arc<Mutex<Vec<usize>>>;

fn lock(idle: &Mutex<Vec<usize>>) -> MutexGuard<'_, Vec<usize>> {
    idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The pool's side: one channel per worker and the shared queue. Dropping it
/// stops the workers.
pub(crate) struct Dispatch {
    idle: IdleWorkers,
    direct: Vec<flume::Sender<Job>>,
    shared: flume::Sender<Job>,
}

/// A worker's side.
pub(crate) struct Inbox {
    index: usize,
    idle: IdleWorkers,
    direct: flume::Receiver<Job>,
    shared: flume::Receiver<Job>,
}

/// What a worker waits for next.
pub(crate) enum Next {
    Job(Box<Job>),
    /// Nothing queued and the worker asked to be told: it makes a blank runtime now.
    Nothing,
    /// Waited a while without work.
    Wait,
    /// The pool is gone.
    Stop,
}

/// Under load the next call comes within microseconds; going to sleep and
/// being woken costs more than that, so a worker that finds nothing to do
/// looks again, yielding its core, for this long before it sleeps.
const LINGER: Duration = Duration::from_micros(50);

/// The dispatch and an inbox for each of `workers` workers.
pub(crate) fn channels(workers: usize) -> (Dispatch, Vec<Inbox>) {
    let idle = IdleWorkers::default();
    let (shared, shared_receiver) = flume::unbounded();
    let (direct, inboxes) = (0..workers)
        .map(|index| {
            let (sender, receiver) = flume::unbounded();
            let inbox = Inbox { index, idle: idle.clone(), direct: receiver, shared: shared_receiver.clone() };
            (sender, inbox)
        })
        .unzip();
    (Dispatch { idle, direct, shared }, inboxes)
}

impl Dispatch {
    /// Sends `job` to the worker idle last, or to the shared queue; `false` when the workers are gone.
    /// The idle list stays locked until the job is queued, so a worker that
    /// announces itself idle meanwhile finds the job when it looks once more.
    pub(crate) fn send(&self, job: Job) -> bool {
        let mut idle = lock(&self.idle);
        match idle.pop().and_then(|index| self.direct.get(index)) {
            Some(direct) => direct.send(job).is_ok(),
            None => self.shared.send(job).is_ok(),
        }
    }
}

impl Inbox {
    /// The next job. With `tell_when_empty`, `Nothing` at once when none is
    /// waiting, before the worker says it is idle.
    pub(crate) fn next(&self, tell_when_empty: bool) -> Next {
        if let Some(next) = self.take() {
            return next;
        }
        if tell_when_empty {
            return Next::Nothing;
        }
        self.announce_idle();
        let lingering = Instant::now();
        loop {
            if let Some(next) = self.take() {
                self.withdraw();
                return next;
            }
            if lingering.elapsed() >= LINGER {
                break;
            }
            std::thread::yield_now();
        }
        match self.direct.recv_timeout(Duration::from_secs(1)) {
            Ok(job) => Next::Job(Box::new(job)),
            Err(flume::RecvTimeoutError::Timeout) => Next::Wait,
            Err(flume::RecvTimeoutError::Disconnected) => Next::Stop,
        }
    }

    /// A job sent to this worker, else one from the shared queue.
    fn take(&self) -> Option<Next> {
        match self.direct.try_recv() {
            Ok(job) => return Some(Next::Job(Box::new(job))),
            Err(flume::TryRecvError::Disconnected) => return Some(Next::Stop),
            Err(flume::TryRecvError::Empty) => {}
        }
        self.shared.try_recv().ok().map(|job| Next::Job(Box::new(job)))
    }

    fn announce_idle(&self) {
        let mut idle = lock(&self.idle);
        if !idle.contains(&self.index) {
            idle.push(self.index);
        }
    }

    /// Leaves the idle list after taking a job from the shared queue (a call
    /// the pool sends meanwhile waits for this worker's next turn).
    fn withdraw(&self) {
        lock(&self.idle).retain(|&index| index != self.index);
    }
}
