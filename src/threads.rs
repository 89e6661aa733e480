//! Where a node's work runs.
//!
//! Raft's timing path (the openraft core, heartbeats, votes, replication
//! and the RPC server that carries them) runs on a tokio runtime of its own
//! ([`Placement::raft`]), so that it never waits in a queue behind
//! remote-write decoding, queries, apply or checkpoints. Those run on the
//! work runtime, whose threads run at a lower CPU priority
//! ([`WORK_NICE`]): on a saturated machine the scheduler then prefers the
//! few milliseconds Raft needs over the bulk work, and a busy node keeps
//! its heartbeats on time. Lowering the priority of one's own threads needs
//! no privilege; raising Raft's would.
//!
//! Threads inherit the nice value of the thread that creates them, so the
//! Raft runtime is built first, from the process's main thread
//! ([`Runtimes::build`]).

use std::future::Future;
use std::io;

use tokio::runtime::{Builder, Handle, Runtime};

/// Nice value added to the work runtime's threads (0 is the default, 19
/// the lowest priority). At 5 the kernel gives a thread of normal
/// priority about three times the CPU share of a work thread when both
/// want the CPU; work threads still get all the CPU Raft leaves idle.
pub const WORK_NICE: i32 = 5;

/// Worker threads of the Raft runtime: the core and the replication
/// streams are light, two threads keep one busy task from delaying the
/// others.
pub const RAFT_THREADS: usize = 2;

/// The two runtimes of a `promraft serve` process.
pub struct Runtimes {
    /// Raft's timing path (see the module documentation).
    pub raft: Runtime,
    /// Everything else: HTTP, decoding, queries, apply, checkpoints.
    pub work: Runtime,
}

impl Runtimes {
    /// Builds the Raft runtime, then the work runtime with its threads at
    /// [`WORK_NICE`]. Call from a thread of normal priority.
    pub fn build() -> io::Result<Runtimes> {
        let raft = Builder::new_multi_thread()
            .worker_threads(RAFT_THREADS)
            .thread_name("promraft-raft")
            .enable_all()
            .build()?;
        let work = Builder::new_multi_thread()
            .thread_name("promraft-work")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        Ok(Runtimes { raft, work })
    }

    /// The placement of a node running on these runtimes.
    pub fn placement(&self) -> Placement {
        Placement::Split {
            raft: self.raft.handle().clone(),
            work: self.work.handle().clone(),
        }
    }
}

/// Lowers the calling thread's CPU priority by [`WORK_NICE`]. On Linux a
/// nice value belongs to a thread, not to the whole process. Failure (a
/// platform without per-thread nice) leaves the priority as it was.
fn lower_priority() {
    // SAFETY: nice(2) only changes the calling thread's scheduling
    // priority; it reads and writes no memory of ours.
    let r = unsafe { libc::nice(WORK_NICE) };
    if r == -1 {
        tracing::debug!("could not lower the priority of a work thread");
    }
}

/// Where a node runs its Raft tasks and its CPU-heavy work.
#[derive(Clone, Debug, Default)]
pub enum Placement {
    /// Everything on the runtime the node is started from (the simulator,
    /// whose single seeded runtime must run every task).
    #[default]
    Current,
    /// Raft on its own runtime, the rest on the work runtime.
    Split {
        /// The Raft runtime.
        raft: Handle,
        /// The work runtime.
        work: Handle,
    },
}

impl Placement {
    /// Runs `fut` on the Raft runtime and waits for its output.
    pub async fn on_raft<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            Placement::Current => fut.await,
            Placement::Split { raft, .. } => match raft.spawn(fut).await {
                Ok(out) => out,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            },
        }
    }

    /// Spawns `fut` on the Raft runtime.
    pub fn spawn_raft<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self {
            Placement::Current => drop(tokio::spawn(fut)),
            Placement::Split { raft, .. } => drop(raft.spawn(fut)),
        }
    }

    /// Runs `f`, CPU-heavy or blocking work of the Raft path (apply, a
    /// checkpoint), away from Raft's threads: on a blocking thread of the
    /// work runtime. With [`Placement::Current`], on the calling task when
    /// `inline` (the simulator: threads would break determinism), else on
    /// a blocking thread of the current runtime.
    pub async fn offload<T: Send + 'static>(
        &self,
        inline: bool,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        let task = match self {
            Placement::Current if inline => return Ok(f()),
            Placement::Current => tokio::task::spawn_blocking(f),
            Placement::Split { work, .. } => work.spawn_blocking(f),
        };
        task.await.map_err(|e| io::Error::other(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_threads_run_at_a_lower_priority_than_raft_threads() {
        let rts = Runtimes::build().expect("runtimes");
        let nice_of_current = || {
            // SAFETY: getpriority reads the calling thread's nice value.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
        };
        let raft = rts
            .raft
            .block_on(async move { tokio::spawn(async move { nice_of_current() }).await });
        let work = rts
            .work
            .block_on(async move { tokio::spawn(async move { nice_of_current() }).await });
        let (raft, work) = (raft.expect("raft task"), work.expect("work task"));
        assert_eq!(work, raft + WORK_NICE, "raft threads at {raft}, work threads at {work}");
        // Blocking threads of the work runtime are lowered too.
        let p = rts.placement();
        let off = rts
            .raft
            .block_on(async move { p.offload(false, nice_of_current).await })
            .expect("offload");
        assert_eq!(off, work);
    }
}
