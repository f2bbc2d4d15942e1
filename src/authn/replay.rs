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
//! A Redis that restarts without persistence, or fails over to a replica that had not yet
//! received the latest keys, forgets proofs it was asked about, which could then be replayed
//! while still fresh. So Redis also holds an epoch key, `prefix` + `epoch`, whose value is
//! `<unix seconds>:<run_id>`: when the moment this cache was (re)started from empty, and by
//! which server process. The same Lua script that records a proof reads it; when the key is
//! gone (data lost) or names another server's `run_id` (restart, failover), the script
//! rewrites it with now, atomically, so every replica agrees on one moment. A proof that
//! could have been used before that moment (its `iat` less the leeway at or before it) is
//! refused: its first use may have been forgotten. Clients then send a fresh proof, which is
//! accepted a leeway (plus a second) after the loss.
//!
//! Sluis starts while Redis is down: the connection is made in the background, with
//! backoff, and DPoP checks fail (closed) until it is up.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

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
    hex::encode(hash.finalize())
}

/// Records a proof's first use and reads the epoch, in one step. KEYS: the epoch key, the
/// proof's key. ARGV: the proof key's TTL in seconds, now (unix seconds), and the `run_id`
/// of the server this replica is connected to. Returns the epoch's seconds, 1 when the
/// proof was not seen before (0 when it was), and 1 when this call found the loss.
const RECORD_SCRIPT: &str = r"
local since
local lost = 0
local epoch = redis.call('GET', KEYS[1])
if epoch then
  local at, run = string.match(epoch, '^(%d+):(.*)$')
  if at and run == ARGV[3] then since = at end
end
if not since then
  since = ARGV[2]
  lost = 1
  redis.call('SET', KEYS[1], since .. ':' .. ARGV[3])
end
local first = redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1])
if first then return {tonumber(since), 1, lost} end
return {tonumber(since), 0, lost}
";

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
    /// Shared by every replica using the same Redis and prefix.
    Redis(Arc<RedisReplay>),
}

/// The Redis-backed cache: a connection kept by a background task.
pub struct RedisReplay {
    prefix: String,
    script: redis::Script,
    /// The connection and the `run_id` of the server it reached; `None` while Redis cannot
    /// be reached, when every check fails.
    live: ArcSwapOption<Live>,
    /// Wakes the connector when a check finds the connection broken.
    broken: Arc<tokio::sync::Notify>,
}

struct Live {
    connection: redis::aio::MultiplexedConnection,
    run_id: String,
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayCache::Memory { cache, since } => f
                .debug_struct("Memory")
                .field("entries", &cache.entry_count())
                .field("since", since)
                .finish(),
            ReplayCache::Redis(redis) => f
                .debug_struct("Redis")
                .field("prefix", &redis.prefix)
                .field("connected", &redis.connected())
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

    /// A cache in Redis at `url` (`redis://[user:password@]host:port[/db]`, `rediss://`
    /// when the client is built with TLS). Keys are `prefix` + the key given to
    /// [`Self::first_use`]. Fails only for a URL that cannot be used; the connection is
    /// made (and remade) in the background, and checks fail while there is none. Needs a
    /// Tokio runtime.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        let broken = Arc::new(tokio::sync::Notify::new());
        let cache = Arc::new(RedisReplay {
            prefix: prefix.to_string(),
            script: redis::Script::new(RECORD_SCRIPT),
            live: ArcSwapOption::empty(),
            broken: broken.clone(),
        });
        tokio::spawn(keep_connected(client, Arc::downgrade(&cache), broken));
        Ok(ReplayCache::Redis(cache))
    }

    /// Whether checks can be answered now: always in memory; with Redis, while connected.
    pub fn connected(&self) -> bool {
        match self {
            ReplayCache::Memory { .. } => true,
            ReplayCache::Redis(redis) => redis.connected(),
        }
    }

    /// The backend's name, for `/readyz`.
    pub fn backend(&self) -> &'static str {
        match self {
            ReplayCache::Memory { .. } => "memory",
            ReplayCache::Redis(_) => "redis",
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
            ReplayCache::Redis(redis) => redis.check(key, ttl, earliest_use).await,
        }
    }
}

impl RedisReplay {
    fn connected(&self) -> bool {
        self.live.load().is_some()
    }

    async fn check(&self, key: &str, ttl: Duration, earliest_use: i64) -> Result<ProofUse, String> {
        let Some(live) = self.live.load_full() else {
            return Err("replay cache (Redis) unavailable: not connected".into());
        };
        let seconds = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1);
        let mut connection = live.connection.clone();
        let reply: Result<(i64, i64, i64), redis::RedisError> = self
            .script
            .key(format!("{}epoch", self.prefix))
            .key(format!("{}{key}", self.prefix))
            .arg(seconds)
            .arg(crate::authn::now_secs())
            .arg(&live.run_id)
            .invoke_async(&mut connection)
            .await;
        let (since, first, lost) = match reply {
            Ok(reply) => reply,
            Err(e) => {
                // Any failure may mean another server behind the address: reconnect, and
                // read its `run_id` again, before answering anything.
                let current = self.live.load();
                if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &live)) {
                    self.live.store(None);
                    self.broken.notify_one();
                }
                return Err(format!("replay cache (Redis) unavailable: {e}"));
            }
        };
        if lost == 1 {
            crate::metrics::global().replay_cache_lost();
            tracing::warn!(
                "dpop replay cache: Redis had lost its keys or was replaced; refusing proofs from before now"
            );
        }
        Ok(if earliest_use <= since {
            ProofUse::BeforeLoss
        } else if first == 1 {
            ProofUse::First
        } else {
            ProofUse::Replayed
        })
    }
}

/// Connects, and reconnects whenever a check finds the connection broken, backing off
/// from 100 ms to 5 s between failed attempts. Ends when the cache is dropped.
async fn keep_connected(
    client: redis::Client,
    cache: Weak<RedisReplay>,
    broken: Arc<tokio::sync::Notify>,
) {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    let mut delay = Duration::from_millis(100);
    loop {
        let Some(replay) = cache.upgrade() else {
            return;
        };
        if replay.connected() {
            drop(replay);
            // Woken by a failed check; the timeout only notices a dropped cache.
            let _ = tokio::time::timeout(Duration::from_secs(5), broken.notified()).await;
            continue;
        }
        match connect(&client, &config).await {
            Ok(live) => {
                if delay > Duration::from_millis(100) {
                    tracing::info!("dpop replay cache: connected to Redis");
                }
                replay.live.store(Some(Arc::new(live)));
                delay = Duration::from_millis(100);
            }
            Err(e) => {
                if delay == Duration::from_millis(100) {
                    tracing::warn!("dpop replay cache: cannot reach Redis, retrying: {e}");
                }
                drop(replay);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A connection and the `run_id` of the server process it reached.
async fn connect(
    client: &redis::Client,
    config: &redis::AsyncConnectionConfig,
) -> Result<Live, String> {
    let mut connection = client
        .get_multiplexed_async_connection_with_config(config)
        .await
        .map_err(|e| e.to_string())?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await
        .map_err(|e| e.to_string())?;
    let run_id = info
        .lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(|id| id.trim().to_string())
        .ok_or("Redis `INFO server` has no `run_id`")?;
    Ok(Live { connection, run_id })
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
