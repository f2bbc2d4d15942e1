//! A replay cache for DPoP proofs (RFC 9449 §11.1): each proof is accepted once while it is
//! fresh enough to be accepted at all.
//!
//! In memory it protects one replica, and only since the cache was created: a restarted
//! Sluis has forgotten the proofs it saw, so, as after a Redis loss below, a proof that
//! could have been accepted before that moment is refused. With several replicas behind a load balancer a proof
//! could be replayed against each of them, so share a Redis: `SET key 1 NX EX ttl` is atomic,
//! whichever replica asks first wins. When Redis cannot answer, [`ReplayCache::first_use`]
//! fails and the caller must fail closed.
//!
//! The shared cache ([`SharedReplay`]) is Redis, in the `sluis-store` crate, which also
//! keeps an epoch so that proofs from before Redis lost its keys are refused
//! ([`ProofUse::BeforeLoss`]).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use sha2::{Digest, Sha256};

/// The cache key for a proof: SHA-256 (hex) of its key's thumbprint and its `jti`, so a
/// client can only ever collide with its own `jti`s.
pub fn proof_key(jkt: &str, jti: &str) -> String {
    let mut hash = Sha256::new();
    // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
    hash.update((jkt.len() as u64).to_be_bytes());
    hash.update(jkt.as_bytes());
    hash.update(jti.as_bytes());
    hex::encode(hash.finalize())
}

/// What the cache says about a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofUse {
    /// Not seen before: accept it.
    First,
    /// Seen before: a replay.
    Replayed,
    /// Could have been used before the cache last lost its keys: refuse it, the client
    /// must send a new proof.
    BeforeLoss,
}

/// Where seen proofs are remembered.
pub enum ReplayCache {
    /// This process only. Holds at most `max_entries`; beyond that the least recently seen
    /// are forgotten first, so size it for the peak number of proofs per validity window.
    Memory {
        cache: Cache<[u8; 32], Duration>,
        /// When this cache was created empty (unix seconds), at process start. Proofs used
        /// before then (by the previous process) were forgotten, so a proof that could
        /// have been accepted before it is refused, as after a Redis loss.
        since: i64,
    },
    /// Shared by every replica using the same store (Redis) and prefix.
    Shared(Arc<dyn SharedReplay>),
}

/// A cache shared by replicas (Redis, in `sluis-store`): whichever replica records a key
/// first wins. When it cannot answer, [`SharedReplay::check`] fails and the caller must
/// fail closed.
pub trait SharedReplay: Send + Sync {
    /// Whether checks can be answered now.
    fn connected(&self) -> bool;
    /// The backend's name, for `/readyz`.
    fn backend(&self) -> &'static str;
    /// As [`ReplayCache::check`].
    fn check<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
        earliest_use: i64,
    ) -> BoxFuture<'a, Result<ProofUse, String>>;
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayCache::Memory { cache, since } => f
                .debug_struct("Memory")
                .field("entries", &cache.entry_count())
                .field("since", since)
                .finish(),
            ReplayCache::Shared(shared) => f
                .debug_struct("Shared")
                .field("backend", &shared.backend())
                .field("connected", &shared.connected())
                .finish(),
        }
    }
}

impl ReplayCache {
    /// An in-process cache of at most `max_entries` keys, each kept for its own TTL.
    pub fn memory(max_entries: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_entries)
            // LRU, not the default TinyLFU: TinyLFU may refuse to admit a new key into a full
            // cache, which would silently let that proof be replayed.
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(OwnTtl)
            .build();
        ReplayCache::Memory {
            cache,
            since: crate::authn::now_secs(),
        }
    }

    /// Whether checks can be answered now: always in memory; with Redis, while connected.
    pub fn connected(&self) -> bool {
        match self {
            ReplayCache::Memory { .. } => true,
            ReplayCache::Shared(shared) => shared.connected(),
        }
    }

    /// The backend's name, for `/readyz`.
    pub fn backend(&self) -> &'static str {
        match self {
            ReplayCache::Memory { .. } => "memory",
            ReplayCache::Shared(shared) => shared.backend(),
        }
    }

    /// True the first time `key` is seen within `ttl`; false for a replay. A `ttl` under a
    /// second counts as a second. `Err` when the cache cannot tell (Redis down): the caller
    /// must then refuse the request. Knows nothing of when the proof was made: DPoP checks
    /// use [`Self::check`].
    pub async fn first_use(&self, key: &str, ttl: Duration) -> Result<bool, String> {
        Ok(self.check(key, ttl, i64::MAX).await? == ProofUse::First)
    }

    /// Records `key` for `ttl` and says whether it was seen before, or whether it could
    /// have been used before the cache last lost its keys: `earliest_use` is the first
    /// unix second at which the proof could have been accepted (its `iat` less the
    /// leeway). `Err` when the cache cannot tell (Redis down): the caller must refuse.
    pub async fn check(
        &self,
        key: &str,
        ttl: Duration,
        earliest_use: i64,
    ) -> Result<ProofUse, String> {
        match self {
            ReplayCache::Memory { cache, since } => {
                // A restarted Sluis has forgotten the proofs it accepted: one that could
                // have been used before this cache existed may be a replay.
                if earliest_use <= *since {
                    return Ok(ProofUse::BeforeLoss);
                }
                let hashed: [u8; 32] = Sha256::digest(key.as_bytes()).into();
                let ttl = ttl.max(Duration::from_secs(1));
                // `or_insert_with` coalesces concurrent calls on one key (`or_insert` does
                // not promise that): of two concurrent callers, exactly one sees it fresh.
                Ok(if cache.entry(hashed).or_insert_with(|| ttl).is_fresh() {
                    ProofUse::First
                } else {
                    ProofUse::Replayed
                })
            }
            ReplayCache::Shared(shared) => shared.check(key, ttl, earliest_use).await,
        }
    }
}

/// Each entry expires after the TTL stored as its value.
struct OwnTtl;

impl moka::Expiry<[u8; 32], Duration> for OwnTtl {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        ttl: &Duration,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(*ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_accepts_a_key_once() {
        let cache = ReplayCache::memory(100);
        let ttl = Duration::from_secs(60);
        assert_eq!(cache.first_use("a", ttl).await, Ok(true));
        assert_eq!(cache.first_use("a", ttl).await, Ok(false));
        assert_eq!(cache.first_use("a", ttl).await, Ok(false));
        assert_eq!(cache.first_use("b", ttl).await, Ok(true));
    }

    #[tokio::test]
    async fn memory_refuses_proofs_from_before_it_was_created() {
        let cache = ReplayCache::memory(100);
        let ReplayCache::Memory { since, .. } = &cache else {
            panic!("memory cache expected");
        };
        let since = *since;
        let ttl = Duration::from_secs(60);
        assert_eq!(cache.check("a", ttl, since).await, Ok(ProofUse::BeforeLoss));
        assert_eq!(
            cache.check("b", ttl, since - 30).await,
            Ok(ProofUse::BeforeLoss)
        );
        assert_eq!(cache.check("c", ttl, since + 1).await, Ok(ProofUse::First));
        assert_eq!(
            cache.check("c", ttl, since + 1).await,
            Ok(ProofUse::Replayed)
        );
    }

    #[tokio::test]
    async fn memory_forgets_after_the_ttl() {
        let cache = ReplayCache::memory(100);
        let short = Duration::from_secs(1);
        assert_eq!(cache.first_use("a", short).await, Ok(true));
        assert_eq!(
            cache.first_use("long", Duration::from_secs(60)).await,
            Ok(true)
        );
        assert_eq!(cache.first_use("a", short).await, Ok(false));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(cache.first_use("a", short).await, Ok(true));
        assert_eq!(
            cache.first_use("long", Duration::from_secs(60)).await,
            Ok(false)
        );
    }

    #[tokio::test]
    async fn memory_is_bounded() {
        let cache = ReplayCache::memory(10);
        for i in 0..100 {
            assert_eq!(
                cache
                    .first_use(&i.to_string(), Duration::from_secs(60))
                    .await,
                Ok(true)
            );
        }
        let ReplayCache::Memory { cache: inner, .. } = &cache else {
            panic!("memory cache expected");
        };
        inner.run_pending_tasks();
        assert!(inner.entry_count() <= 10, "{}", inner.entry_count());
        // The most recent keys are still remembered.
        assert_eq!(
            cache.first_use("99", Duration::from_secs(60)).await,
            Ok(false)
        );
    }

    #[tokio::test]
    async fn concurrent_first_use_is_won_once() {
        let cache = std::sync::Arc::new(ReplayCache::memory(1000));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let cache = cache.clone();
            tasks.push(std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                runtime.block_on(cache.first_use("same", Duration::from_secs(60)))
            }));
        }
        let wins = tasks
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|won| *won == Ok(true))
            .count();
        assert_eq!(wins, 1);
    }

    #[test]
    fn proof_key_separates_clients_and_fields() {
        assert_eq!(proof_key("k", "j"), proof_key("k", "j"));
        assert_ne!(proof_key("k1", "j"), proof_key("k2", "j"));
        assert_ne!(proof_key("ab", "c"), proof_key("a", "bc"));
        assert_eq!(proof_key("k", "j").len(), 64);
    }
}
