//! openraft's async runtime for promraft: tokio, with a random number
//! source that a simulation can seed.
//!
//! openraft draws random numbers (election timeouts) through its runtime.
//! [`SeededRuntime`] is [`openraft::TokioRuntime`] in everything, except
//! that inside [`SeededRuntime::scope`] every draw, and every task openraft
//! spawns from there, takes its randomness from a seed (the same seed tree
//! as openraft-rt's `DeterministicRng`). Outside a scope, which is always
//! the case in production, draws come from the operating system's entropy
//! exactly as with `TokioRuntime`, and spawning is a plain `tokio::spawn`.
//! So production behaves as before, and the simulator (`sim/`) gets one seed
//! that replays openraft's choices exactly.
//!
//! It must not decide anything else: timers, channels and locks are
//! tokio's, unchanged.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::time::Duration;

use openraft::rt::{OptionalSend, Select2, Select3, Select4};
use openraft::{AsyncRuntime, TokioRuntime};
use rand010::rngs::SmallRng;
use rand010::SeedableRng;

/// Golden ratio fractional bits: derives a child task's seed.
const GOLDEN_RATIO: u64 = 0x9e37_79b9_7f4a_7c15;
/// sqrt(2) fractional bits: advances a task's own seed.
const SQRT2: u64 = 0x6a09_e667_f3bc_c908;

tokio::task_local! {
    static SEED: Cell<u64>;
}

/// SplitMix64: a bijective mixer; `gamma` picks the sequence.
fn splitmix64(seed: u64, gamma: u64) -> u64 {
    let z = seed.wrapping_add(gamma);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The current task's seed, advanced; `None` outside a scope.
fn take_and_advance_seed() -> Option<u64> {
    SEED.try_with(|c| {
        let s = c.get();
        c.set(splitmix64(s, SQRT2));
        s
    })
    .ok()
}

/// tokio for openraft, with randomness a simulation can seed.
#[derive(Debug)]
pub struct SeededRuntime {
    inner: TokioRuntime,
}

impl SeededRuntime {
    /// Runs `f` with openraft's randomness (and that of every task openraft
    /// spawns from inside it) derived from `seed`. The simulator starts each
    /// node inside one; production never calls it.
    pub fn scope<F: Future>(seed: u64, f: F) -> tokio::task::futures::TaskLocalFuture<Cell<u64>, F> {
        SEED.scope(Cell::new(seed), f)
    }
}

impl AsyncRuntime for SeededRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;

    #[inline]
    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        match take_and_advance_seed() {
            Some(s) => TokioRuntime::spawn(SEED.scope(Cell::new(splitmix64(s, GOLDEN_RATIO)), future)),
            None => TokioRuntime::spawn(future),
        }
    }

    #[inline]
    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    #[inline]
    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    #[inline]
    fn timeout<R, F>(duration: Duration, future: F) -> Self::Timeout<R, F>
    where
        F: Future<Output = R> + OptionalSend,
    {
        TokioRuntime::timeout(duration, future)
    }

    #[inline]
    fn timeout_at<R, F>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F>
    where
        F: Future<Output = R> + OptionalSend,
    {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn select2<A, B>(a: A, b: B) -> impl Future<Output = Select2<A::Output, B::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
    {
        TokioRuntime::select2(a, b)
    }

    fn select3<A, B, C>(
        a: A,
        b: B,
        c: C,
    ) -> impl Future<Output = Select3<A::Output, B::Output, C::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
        C: Future + OptionalSend,
    {
        TokioRuntime::select3(a, b, c)
    }

    fn select4<A, B, C, D>(
        a: A,
        b: B,
        c: C,
        d: D,
    ) -> impl Future<Output = Select4<A::Output, B::Output, C::Output, D::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
        C: Future + OptionalSend,
        D: Future + OptionalSend,
    {
        TokioRuntime::select4(a, b, c, d)
    }

    #[inline]
    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    #[inline]
    fn thread_rng() -> Self::ThreadLocalRng {
        match take_and_advance_seed() {
            Some(s) => SmallRng::seed_from_u64(s),
            None => rand010::make_rng(),
        }
    }

    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    type Watch = <TokioRuntime as AsyncRuntime>::Watch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn new(threads: usize) -> Self {
        SeededRuntime {
            inner: TokioRuntime::new(threads),
        }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.inner.block_on(future)
    }

    fn spawn_blocking<F, T>(f: F) -> impl Future<Output = Result<T, io::Error>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        TokioRuntime::spawn_blocking(f)
    }
}

#[cfg(test)]
mod tests {
    use rand010::RngExt;

    use super::*;

    fn draws() -> Vec<u64> {
        (0..4).map(|_| SeededRuntime::thread_rng().random::<u64>()).collect()
    }

    #[tokio::test]
    async fn a_scope_replays_and_no_scope_is_random() {
        let a = SeededRuntime::scope(7, async { draws() }).await;
        let b = SeededRuntime::scope(7, async { draws() }).await;
        let c = SeededRuntime::scope(8, async { draws() }).await;
        assert_eq!(a, b, "the same seed must give the same draws");
        assert_ne!(a, c, "another seed must give other draws");
        assert_ne!(draws(), draws(), "outside a scope draws come from entropy");
        let child = SeededRuntime::scope(7, async { SeededRuntime::spawn(async { draws() }).await.unwrap() }).await;
        let again = SeededRuntime::scope(7, async { SeededRuntime::spawn(async { draws() }).await.unwrap() }).await;
        assert_eq!(child, again, "spawned tasks inherit a derived seed");
    }
}
