//! The DPoP replay cache shared through Redis, as two replicas of Sluis would share it.
//!
//! Needs a Redis at 127.0.0.1:6379 (or `SLUIS_TEST_REDIS_URL`). Without one the tests print
//! `SKIPPED: ...` and pass, unless `SLUIS_REQUIRE_REDIS=1`, where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluis::authn::replay::{ReplayCache, proof_key};

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

/// Two caches on one Redis under one fresh prefix, or `None` when there is no Redis and
/// that is allowed.
async fn two_replicas() -> Option<(ReplayCache, ReplayCache)> {
    let url = redis_url();
    let prefix = random_prefix();
    let connect = |url: String, prefix: String| async move {
        tokio::time::timeout(Duration::from_secs(5), ReplayCache::redis(&url, &prefix))
            .await
            .unwrap_or_else(|_| Err("timed out".to_string()))
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
async fn unreachable_redis_fails_to_connect() {
    // Port 1 on localhost: nothing listens there.
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        ReplayCache::redis("redis://127.0.0.1:1", "x:"),
    )
    .await
    .expect("gives up in time");
    assert!(result.is_err());
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
    let cache = ReplayCache::redis(&format!("redis://{}", proxy.addr), &random_prefix())
        .await
        .unwrap();
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
