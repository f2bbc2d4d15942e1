//! A counter and a histogram that the request path bumps without two threads writing
//! one cache line.
//!
//! prometheus-client's `Counter` is one shared atomic and its `Histogram` a mutex around
//! the sum, the count and the buckets: every decision, on whichever worker thread it ran,
//! wrote the same lines, so with two workers busy each write waited for the line to come
//! over from the other core. Here each metric keeps one set of cells per shard, each
//! shard on lines of its own, and a thread always writes the shard it was given the
//! first time it counted. A scrape adds the shards up; the text is what prometheus-client
//! writes for its own types (the property tests below hold the two side by side).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards per metric: more than the cores a server of this kind is given, so two busy
/// threads rarely share one.
const SHARDS: usize = 8;

/// A histogram has at most this many buckets, the `+Inf` bucket included.
pub(super) const MAX_BUCKETS: usize = 16;

/// Two cache lines: what a neighbouring line's prefetch pulls in stays in the shard.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// The calling thread's shard (below [`SHARDS`]): threads are dealt shards in turn as
/// they first count.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    // While a thread's locals are being torn down there is no shard of its own: share
    // the first (still correct, only slower).
    SHARD.try_with(|shard| *shard).unwrap_or(0)
}

/// A monotonically increasing count, written per shard.
#[derive(Clone, Default)]
pub(super) struct ShardedCounter(Arc<[Padded<AtomicU64>; SHARDS]>);

impl ShardedCounter {
    pub(super) fn inc(&self) {
        if let Some(cell) = self.0.get(shard()) {
            cell.0.fetch_add(1, Relaxed);
        }
    }

    pub(super) fn get(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, cell| sum.wrapping_add(cell.0.load(Relaxed)))
    }
}

impl std::fmt::Debug for ShardedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ShardedCounter").field(&self.get()).finish()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One shard of a histogram: the sum's bits, then each bucket's count.
#[derive(Default)]
struct Cells {
    sum: AtomicU64,
    buckets: [AtomicU64; MAX_BUCKETS],
}

struct HistogramShards {
    /// Upper bounds, the finite ones ascending, then `+Inf`.
    bounds: Box<[f64]>,
    shards: [Padded<Cells>; SHARDS],
}

/// A histogram with fixed buckets, written per shard. Its count is the sum of its
/// buckets, so a scrape always sees the `+Inf` bucket equal to the count.
#[derive(Clone)]
pub(super) struct ShardedHistogram(Arc<HistogramShards>);

impl ShardedHistogram {
    /// Buckets with these upper bounds (non-finite ones are dropped) and `+Inf`, as
    /// prometheus-client's `Histogram::new`.
    ///
    /// # Panics
    /// With more than [`MAX_BUCKETS`] buckets, `+Inf` included: a programming error.
    pub(super) fn new(bounds: impl IntoIterator<Item = f64>) -> ShardedHistogram {
        let bounds: Box<[f64]> = bounds
            .into_iter()
            .filter(|bound| bound.is_finite())
            .chain(std::iter::once(f64::INFINITY))
            .collect();
        assert!(bounds.len() <= MAX_BUCKETS, "too many histogram buckets");
        ShardedHistogram(Arc::new(HistogramShards {
            bounds,
            shards: Default::default(),
        }))
    }

    /// Counts `value` in the first bucket whose bound is at least it (a NaN in `+Inf`),
    /// as prometheus-client does.
    pub(super) fn observe(&self, value: f64) {
        let shards = &*self.0;
        let last = shards.bounds.len() - 1;
        let bucket = if value.is_nan() {
            last
        } else {
            shards
                .bounds
                .iter()
                .position(|bound| *bound >= value)
                .unwrap_or(last)
        };
        let Some(Padded(cells)) = shards.shards.get(shard()) else {
            return;
        };
        // Only this shard's threads add to this sum: the loop almost never retries.
        let _ = cells.sum.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
        if let Some(count) = cells.buckets.get(bucket) {
            count.fetch_add(1, Relaxed);
        }
    }

    /// The sum, the count and each bucket's count (not cumulative), over all shards.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let shards = &*self.0;
        let mut buckets: Vec<(f64, u64)> = shards.bounds.iter().map(|b| (*b, 0)).collect();
        let mut sum = 0.0;
        for shard in &shards.shards {
            sum += f64::from_bits(shard.0.sum.load(Relaxed));
            for (total, cell) in buckets.iter_mut().zip(&shard.0.buckets) {
                total.1 = total.1.wrapping_add(cell.load(Relaxed));
            }
        }
        let count = buckets.iter().fold(0u64, |n, b| n.wrapping_add(b.1));
        (sum, count, buckets)
    }
}

impl std::fmt::Debug for ShardedHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (sum, count, _) = self.snapshot();
        f.debug_struct("ShardedHistogram")
            .field("sum", &sum)
            .field("count", &count)
            .finish()
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
    use prometheus_client::registry::Registry;
    use proptest::prelude::*;

    fn text(register: impl FnOnce(&mut Registry)) -> String {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn bounds() -> impl Strategy<Value = Vec<f64>> {
        prop_oneof![
            Just(exponential_buckets(0.000_005, 2.0, 15).collect::<Vec<_>>()),
            Just(exponential_buckets(0.001, 2.0, 15).collect::<Vec<_>>()),
            Just(Vec::new()),
            proptest::collection::vec(-1e6f64..1e6, 0..14).prop_map(|mut b| {
                b.sort_by(f64::total_cmp);
                b
            }),
        ]
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => 0.0f64..0.2,
            1 => -1e7f64..1e7,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(0.000_005),
        ]
    }

    proptest! {
        /// The same observations, spread over threads, give the text prometheus-client's
        /// own histogram gives (sums compared as written: added in another order they
        /// may differ in the last place, so integral values are used for them).
        #[test]
        fn histogram_writes_what_prometheus_client_writes(
            bounds in bounds(),
            values in proptest::collection::vec(value(), 0..200),
            threads in 1usize..4,
        ) {
            // Whole values keep the sum exact whatever order the shards add in.
            let values: Vec<f64> = values
                .into_iter()
                .map(|v| if v.is_finite() { (v * 1e6).round() } else { v })
                .collect();
            let theirs = Histogram::new(bounds.iter().map(|b| b * 1e6));
            let ours = ShardedHistogram::new(bounds.iter().map(|b| b * 1e6));
            for v in &values {
                theirs.observe(*v);
            }
            std::thread::scope(|scope| {
                for part in values.chunks(values.len().div_ceil(threads).max(1)) {
                    let ours = ours.clone();
                    scope.spawn(move || part.iter().for_each(|v| ours.observe(*v)));
                }
            });
            let expected = text(|r| r.register("h", "help", theirs));
            let got = text(|r| r.register("h", "help", ours));
            prop_assert_eq!(got, expected);
        }

        /// A counter bumped from several threads counts every bump, written as
        /// prometheus-client writes its own.
        #[test]
        fn counter_writes_what_prometheus_client_writes(bumps in 0u64..3000, threads in 1usize..5) {
            let theirs = Counter::<u64>::default();
            theirs.inc_by(bumps);
            let ours = ShardedCounter::default();
            std::thread::scope(|scope| {
                for t in 0..threads as u64 {
                    let ours = ours.clone();
                    let n = bumps / threads as u64 + u64::from(t < bumps % threads as u64);
                    scope.spawn(move || (0..n).for_each(|_| ours.inc()));
                }
            });
            prop_assert_eq!(ours.get(), bumps);
            let expected = text(|r| r.register("c", "help", theirs));
            let got = text(|r| r.register("c", "help", ours));
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    #[should_panic(expected = "too many histogram buckets")]
    fn too_many_buckets_is_refused() {
        ShardedHistogram::new((0..MAX_BUCKETS).map(|n| n as f64));
    }
}
