//! The DPoP replay cache shared by replicas, in Redis (RFC 9449 §11.1): `SET key 1 NX EX
//! ttl` is atomic, so whichever replica asks first wins. When Redis cannot answer, a check
//! fails and the caller fails closed.
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
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::future::BoxFuture;
use sluis_core::authn::replay::{ProofUse, ReplayCache, SharedReplay};
use sluis_core::metrics::Metrics;

/// How long a Redis command or connection attempt may take before the check fails.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

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

/// The Redis-backed cache: a connection kept by a background task.
pub struct RedisReplay {
    prefix: String,
    script: redis::Script,
    /// The connection and the `run_id` of the server it reached; `None` while Redis cannot
    /// be reached, when every check fails.
    live: ArcSwapOption<Live>,
    /// Wakes the connector when a check finds the connection broken.
    broken: Arc<tokio::sync::Notify>,
    /// Where a found loss is counted.
    metrics: Arc<Metrics>,
}

struct Live {
    connection: redis::aio::MultiplexedConnection,
    run_id: String,
}

impl SharedReplay for RedisReplay {
    fn connected(&self) -> bool {
        self.live.load().is_some()
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    fn check<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
        earliest_use: i64,
    ) -> BoxFuture<'a, Result<ProofUse, String>> {
        Box::pin(self.record(key, ttl, earliest_use))
    }
}

impl RedisReplay {
    /// A cache in Redis at `url` (`redis://[user:password@]host:port[/db]`, `rediss://`
    /// when the client is built with TLS). Keys are `prefix` + the key given to
    /// [`ReplayCache::first_use`]. Fails only for a URL that cannot be used; the connection is
    /// made (and remade) in the background, and checks fail while there is none. Needs a
    /// Tokio runtime.
    pub async fn connect(
        url: &str,
        prefix: &str,
        metrics: Arc<Metrics>,
    ) -> Result<ReplayCache, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        let broken = Arc::new(tokio::sync::Notify::new());
        let cache = Arc::new(RedisReplay {
            prefix: prefix.to_string(),
            script: redis::Script::new(RECORD_SCRIPT),
            live: ArcSwapOption::empty(),
            broken: broken.clone(),
            metrics,
        });
        tokio::spawn(keep_connected(client, Arc::downgrade(&cache), broken));
        Ok(ReplayCache::Shared(cache))
    }

    async fn record(
        &self,
        key: &str,
        ttl: Duration,
        earliest_use: i64,
    ) -> Result<ProofUse, String> {
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
            .arg(sluis_core::authn::now_secs())
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
            self.metrics.replay_cache_lost();
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
