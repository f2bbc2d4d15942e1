//! The DPoP replay cache shared through Redis, as two replicas of Sluis would share it.
//!
//! Needs a Redis at 127.0.0.1:6379 (or `SLUIS_TEST_REDIS_URL`). Without one the tests print
//! `SKIPPED: ...` and pass, unless `SLUIS_REQUIRE_REDIS=1`, where they fail.

use sluis_test_kit as kit;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluis_core::authn::replay::{ProofUse, ReplayCache, proof_key};

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

fn redis_url() -> String {
    std::env::var("SLUIS_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A prefix no other test run uses, so runs never see each other's keys.
fn random_prefix() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    format!("sluis-test:{:016x}:", hasher.finish())
}

/// Waits (at most 5 s) for the cache's background connection.
async fn wait_connected(cache: &ReplayCache) {
    for _ in 0..50 {
        if cache.connected() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two caches on one Redis under one fresh prefix, or `None` when there is no Redis and
/// that is allowed.
async fn two_replicas() -> Option<(ReplayCache, ReplayCache)> {
    let url = redis_url();
    let prefix = random_prefix();
    let connect = |url: String, prefix: String| async move {
        let cache =
            sluis_store::RedisReplay::connect(&url, &prefix, std::sync::Arc::default()).await?;
        wait_connected(&cache).await;
        if cache.connected() {
            Ok(cache)
        } else {
            Err("not connected within 5 s".to_string())
        }
    };
    match connect(url.clone(), prefix.clone()).await {
        Ok(a) => {
            let b = connect(url, prefix).await.expect("second replica");
            Some((a, b))
        }
        Err(e) => {
            if std::env::var("SLUIS_REQUIRE_REDIS").as_deref() == Ok("1") {
                panic!("SLUIS_REQUIRE_REDIS=1 but no Redis at {url}: {e}");
            }
            let place = url.strip_prefix("redis://").unwrap_or(&url);
            println!("SKIPPED: no Redis at {place} ({e})");
            None
        }
    }
}

#[tokio::test]
async fn a_proof_is_accepted_by_one_replica_only() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let ttl = Duration::from_secs(60);
    let key = proof_key("jkt-of-client", "jti-1");
    assert_eq!(a.first_use(&key, ttl).await, Ok(true), "first use via A");
    assert_eq!(b.first_use(&key, ttl).await, Ok(false), "replay via B");
    assert_eq!(a.first_use(&key, ttl).await, Ok(false), "replay via A");
}

#[tokio::test]
async fn different_proofs_are_all_accepted() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let ttl = Duration::from_secs(60);
    let first = proof_key("jkt-of-client", "jti-1");
    let second = proof_key("jkt-of-client", "jti-2");
    // Another client reusing the same jti is not blocked.
    let other_client = proof_key("jkt-of-other-client", "jti-1");
    assert_eq!(a.first_use(&first, ttl).await, Ok(true));
    assert_eq!(b.first_use(&second, ttl).await, Ok(true));
    assert_eq!(b.first_use(&other_client, ttl).await, Ok(true));
}

#[tokio::test]
async fn a_key_is_forgotten_after_its_ttl() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let key = proof_key("jkt", "short-lived");
    assert_eq!(a.first_use(&key, Duration::from_secs(1)).await, Ok(true));
    assert_eq!(b.first_use(&key, Duration::from_secs(1)).await, Ok(false));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(b.first_use(&key, Duration::from_secs(1)).await, Ok(true));
}

#[tokio::test]
async fn concurrent_replicas_let_one_use_through() {
    let Some((a, b)) = two_replicas().await else {
        return;
    };
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let key = proof_key("jkt", "raced");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            cache.first_use(&key, Duration::from_secs(60)).await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        if task.await.unwrap().unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn unreachable_redis_fails_closed_without_failing_to_start() {
    // Port 1 on localhost: nothing listens there.
    let cache = tokio::time::timeout(
        Duration::from_secs(10),
        sluis_store::RedisReplay::connect("redis://127.0.0.1:1", "x:", std::sync::Arc::default()),
    )
    .await
    .expect("returns at once")
    .expect("a usable URL");
    assert!(!cache.connected());
    let answer = cache.first_use("k", Duration::from_secs(60)).await;
    assert!(answer.is_err(), "{answer:?}");
}

/// A TCP proxy in front of Redis that can be cut, as when Redis goes away.
struct Proxy {
    addr: std::net::SocketAddr,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let target = target.to_string();
        let registry = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                registry.lock().unwrap().push(pipe);
            }
        });
        tasks.lock().unwrap().push(accept);
        Proxy { addr, tasks }
    }

    /// Closes every connection and stops listening.
    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

#[tokio::test]
async fn losing_redis_fails_closed() {
    let url = redis_url();
    let Some(target) = url
        .strip_prefix("redis://")
        .map(|rest| rest.trim_end_matches('/').to_string())
    else {
        println!("SKIPPED: {url} is not a plain redis:// URL");
        return;
    };
    if tokio::net::TcpStream::connect(&target).await.is_err() {
        if std::env::var("SLUIS_REQUIRE_REDIS").as_deref() == Ok("1") {
            panic!("SLUIS_REQUIRE_REDIS=1 but no Redis at {target}");
        }
        println!("SKIPPED: no Redis at {target}");
        return;
    }
    let proxy = Proxy::start(&target).await;
    let cache = sluis_store::RedisReplay::connect(
        &format!("redis://{}", proxy.addr),
        &random_prefix(),
        std::sync::Arc::default(),
    )
    .await
    .unwrap();
    wait_connected(&cache).await;
    let ttl = Duration::from_secs(60);
    assert_eq!(cache.first_use("before", ttl).await, Ok(true));

    proxy.cut();
    let started = std::time::Instant::now();
    for key in ["after-1", "after-2", "before"] {
        let answer = cache.first_use(key, ttl).await;
        assert!(answer.is_err(), "{key}: {answer:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Asks until the cache answers (it connects in the background), for at most 10 s.
async fn first_answer(
    cache: &ReplayCache,
    key: &str,
    ttl: Duration,
    earliest_use: i64,
) -> Result<ProofUse, String> {
    let mut last = Err("never asked".to_string());
    for _ in 0..100 {
        last = cache.check(key, ttl, earliest_use).await;
        if last.is_ok() {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// A Redis without persistence forgets every used proof when it restarts; a proof used
/// before must still be refused after, though the key that remembered it is gone. A proof
/// made after the restart is accepted.
#[tokio::test]
async fn a_proof_used_before_a_redis_restart_is_refused_after_it() {
    if !kit::redis_server::available() {
        return;
    }
    let redis = kit::redis_server::RedisServer::start(kit::redis_server::free_port());
    let port = redis.port;
    let cache =
        sluis_store::RedisReplay::connect(&redis.url(), "restart:", std::sync::Arc::default())
            .await
            .unwrap();
    let ttl = Duration::from_secs(60);
    let key = proof_key("jkt", "used-before-the-restart");
    // The first look at an empty Redis starts its epoch: a proof must come after it.
    assert_eq!(
        first_answer(&cache, "warm-up", ttl, now()).await,
        Ok(ProofUse::BeforeLoss)
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let used_at = now();
    assert_eq!(
        cache.check(&key, ttl, used_at).await,
        Ok(ProofUse::First),
        "first use"
    );
    assert_eq!(
        cache.check(&key, ttl, used_at).await,
        Ok(ProofUse::Replayed),
        "replay"
    );

    redis.kill();
    let _restarted = kit::redis_server::RedisServer::start(port);
    assert_eq!(
        first_answer(&cache, &key, ttl, used_at).await,
        Ok(ProofUse::BeforeLoss),
        "replay after the restart"
    );
    // A second replica, connecting after the restart, agrees.
    let other = sluis_store::RedisReplay::connect(
        &format!("redis://127.0.0.1:{port}"),
        "restart:",
        std::sync::Arc::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        first_answer(&other, &key, ttl, used_at).await,
        Ok(ProofUse::BeforeLoss),
        "replay at another replica"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = proof_key("jkt", "made-after-the-restart");
    assert_eq!(
        cache.check(&fresh, ttl, now()).await,
        Ok(ProofUse::First),
        "a new proof"
    );
    assert_eq!(
        other.check(&fresh, ttl, now()).await,
        Ok(ProofUse::Replayed),
        "the new proof replayed at another replica"
    );
}

/// Flushing the keys (or evicting them) is found out the same way as a restart.
#[tokio::test]
async fn a_flushed_cache_refuses_earlier_proofs() {
    if !kit::redis_server::available() {
        return;
    }
    let redis = kit::redis_server::RedisServer::start(kit::redis_server::free_port());
    let cache =
        sluis_store::RedisReplay::connect(&redis.url(), "flush:", std::sync::Arc::default())
            .await
            .unwrap();
    let ttl = Duration::from_secs(60);
    first_answer(&cache, "warm-up", ttl, now()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let used_at = now();
    assert_eq!(cache.check("p", ttl, used_at).await, Ok(ProofUse::First));
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        cache.check("p", ttl, used_at).await,
        Ok(ProofUse::BeforeLoss)
    );
}
