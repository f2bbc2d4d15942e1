//! A replay cache for DPoP proofs (RFC 9449 §11.1): each proof is accepted once while it is
//! fresh enough to be accepted at all.
//!
//! In memory it protects one replica; with several replicas behind a load balancer a proof
//! could be replayed against each of them, so share a Redis: `SET key 1 NX EX ttl` is atomic,
//! whichever replica asks first wins. When Redis cannot answer, [`ReplayCache::first_use`]
//! fails and the caller must fail closed.

use std::time::{Duration, Instant};

use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use sha2::{Digest, Sha256};

/// How long a Redis command or connection attempt may take before the check fails.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// The cache key for a proof: SHA-256 (hex) of its key's thumbprint and its `jti`, so a
/// client can only ever collide with its own `jti`s.
pub fn proof_key(jkt: &str, jti: &str) -> String {
    let mut hash = Sha256::new();
    // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
    hash.update((jkt.len() as u64).to_be_bytes());
    hash.update(jkt.as_bytes());
    hash.update(jti.as_bytes());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Where seen proofs are remembered.
pub enum ReplayCache {
    /// This process only. Holds at most `max_entries`; beyond that the least recently seen
    /// are forgotten first, so size it for the peak number of proofs per validity window.
    Memory(Cache<[u8; 32], Duration>),
    /// Shared by every replica using the same Redis and prefix.
    Redis {
        manager: redis::aio::ConnectionManager,
        prefix: String,
    },
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayCache::Memory(cache) => f
                .debug_struct("Memory")
                .field("entries", &cache.entry_count())
                .finish(),
            ReplayCache::Redis { prefix, .. } => {
                f.debug_struct("Redis").field("prefix", prefix).finish()
            }
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
        ReplayCache::Memory(cache)
    }

    /// Connects to Redis at `url` (`redis://[user:password@]host:port[/db]`, `rediss://`
    /// when the client is built with TLS). Keys are `prefix` + the key given to
    /// [`Self::first_use`]. Fails when Redis cannot be reached now; once connected, the
    /// manager reconnects by itself and checks fail while it cannot.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            // Reconnect quickly or fail: a request waiting on a reconnect waits for these.
            .set_number_of_retries(2)
            .set_max_delay(REDIS_TIMEOUT);
        let manager = redis::aio::ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| format!("cannot connect to Redis: {e}"))?;
        Ok(ReplayCache::Redis {
            manager,
            prefix: prefix.to_string(),
        })
    }

    /// True the first time `key` is seen within `ttl`; false for a replay. A `ttl` under a
    /// second counts as a second. `Err` when the cache cannot tell (Redis down): the caller
    /// must then refuse the request.
    pub async fn first_use(&self, key: &str, ttl: Duration) -> Result<bool, String> {
        match self {
            ReplayCache::Memory(cache) => {
                let hashed: [u8; 32] = Sha256::digest(key.as_bytes()).into();
                let ttl = ttl.max(Duration::from_secs(1));
                // `or_insert_with` coalesces concurrent calls on one key (`or_insert` does
                // not promise that): of two concurrent callers, exactly one sees it fresh.
                Ok(cache.entry(hashed).or_insert_with(|| ttl).is_fresh())
            }
            ReplayCache::Redis { manager, prefix } => {
                let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
                let mut connection = manager.clone();
                let reply: Option<String> = redis::cmd("SET")
                    .arg(format!("{prefix}{key}"))
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(seconds.max(1))
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| format!("replay cache (Redis) unavailable: {e}"))?;
                Ok(reply.is_some())
            }
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
        _created_at: Instant,
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
        let ReplayCache::Memory(inner) = &cache else {
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
