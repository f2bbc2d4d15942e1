//! Two Sluis replicas A and B on one PostgreSQL database: writes through A's admin API
//! reach B's decisions within a second (LISTEN/NOTIFY), B survives losing its database
//! connections, and while the database is away writes fail cleanly with 503 while
//! decisions go on from the in-memory index; when it is back, writes succeed and B
//! catches up, without restarting anything.
//!
//! Needs a PostgreSQL at 127.0.0.1:5432 where user `postgres` may create databases
//! without a password (or `SLUIS_TEST_POSTGRES_URL`, a URL to an existing database of
//! such a user). Every test works in a fresh database `sluis_test_...`, dropped at the
//! end. Without a PostgreSQL the tests print `SKIPPED: ...` and pass, unless
//! `SLUIS_REQUIRE_POSTGRES=1`, where they fail.

use sluis_test_kit as kit;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kit::flows::*;
use kit::*;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The longest a change made through one replica may take to change another's decisions.
const PROPAGATION: Duration = Duration::from_secs(1);
/// How long a replica may take to catch up after losing its database connections: its
/// listener reconnects with a backoff of at most 5 s.
const RECOVERY: Duration = Duration::from_secs(15);

fn admin_url() -> String {
    std::env::var("SLUIS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A fresh database for one test, dropped (with whatever is still connected) on drop.
struct Database {
    name: String,
    admin_url: String,
}

impl Database {
    /// `None` when there is no PostgreSQL and that is allowed.
    async fn create() -> Option<Database> {
        let admin_url = admin_url();
        let connected =
            tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin_url))
                .await
                .map_err(|_| "timed out".to_string())
                .and_then(|c| c.map_err(|e| e.to_string()));
        let mut connection = match connected {
            Ok(connection) => connection,
            Err(e) => {
                let place = admin_url.rsplit('@').next().unwrap_or(&admin_url);
                if std::env::var("SLUIS_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                    panic!("SLUIS_REQUIRE_POSTGRES=1 but no PostgreSQL at {place}: {e}");
                }
                println!("SKIPPED: no PostgreSQL at {place} ({e})");
                return None;
            }
        };
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        hasher.write_u32(std::process::id());
        let name = format!("sluis_test_{:016x}", hasher.finish());
        connection
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
        connection.close().await.unwrap();
        Some(Database { name, admin_url })
    }

    /// The URL a replica connects with; `application` tells its connections apart.
    fn url(&self, application: &str) -> String {
        let base = self.admin_url.split('?').next().unwrap();
        let (server, _) = base.rsplit_once('/').unwrap();
        format!("{server}/{}?application_name={application}", self.name)
    }

    async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.admin_url).await.unwrap()
    }

    /// Terminates the connections to this database of `application` (all when `None`).
    /// Returns how many.
    async fn terminate(&self, application: Option<&str>) -> usize {
        let mut admin = self.admin().await;
        let terminated: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND ($2::text IS NULL OR application_name = $2)
               AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .bind(application)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        admin.close().await.unwrap();
        terminated.len()
    }

    /// Whether `application` has a connection whose last statement was a LISTEN.
    async fn listening(&self, application: &str) -> bool {
        let mut admin = self.admin().await;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = $2 AND query LIKE 'LISTEN %'",
        )
        .bind(&self.name)
        .bind(application)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        admin.close().await.unwrap();
        count > 0
    }

    /// As a restart looks to clients: no new connections, existing ones cut.
    async fn go_away(&self) {
        self.allow_connections(false).await;
        self.terminate(None).await;
    }

    async fn come_back(&self) {
        self.allow_connections(true).await;
    }

    async fn allow_connections(&self, allow: bool) {
        let mut admin = self.admin().await;
        admin
            .execute(AssertSqlSafe(format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS {allow}",
                self.name
            )))
            .await
            .unwrap();
        admin.close().await.unwrap();
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // On its own runtime: drop may run inside (or after) the test's runtime.
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut admin = PgConnection::connect(&url).await?;
                admin
                    .execute(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// Replicas A and B on `db`, each listening for changes. Changes reach them only through
/// notifications and catch-ups after reconnects: the safety-net poll is an hour.
async fn replicas(db: &Database) -> (Setup, Server, Server) {
    let store = |application: &str| {
        format!(
            r#"{{url: "{}", timeout: 1s, poll_interval: 1h}}"#,
            db.url(application)
        )
    };
    let setup = setup(&config(&store("sluis-a"), TOKEN_ADMIN));
    let config_b = setup.dir.path().join("sluis-b.yaml");
    std::fs::write(&config_b, config(&store("sluis-b"), TOKEN_ADMIN)).unwrap();
    let a = Server::start(&setup.config_path()).await;
    let b = Server::start(&config_b).await;
    for application in ["sluis-a", "sluis-b"] {
        let listening = within(Duration::from_secs(10), || db.listening(application)).await;
        assert!(listening.is_some(), "{application} does not LISTEN");
    }
    (setup, a, b)
}

/// Whether the Sluis at `grpc` answers `status` to the receiver reading `resource`
/// within `limit`, polling; how long it took. The connection is made before the clock
/// starts: the time is the replica's, not the test's.
async fn decides(
    grpc: std::net::SocketAddr,
    resource: &str,
    status: u16,
    limit: Duration,
) -> Option<Duration> {
    let token = nuts_token(RECEIVER);
    let decider = tokio::sync::Mutex::new(Decider::connect(grpc).await);
    within(limit, || async {
        let answer = decider.lock().await.decide(read(&token, resource)).await;
        answer.status == status
    })
    .await
}

#[tokio::test]
async fn changes_via_one_replica_reach_the_others_decisions_within_1s() {
    let Some(db) = Database::create().await else {
        return;
    };
    let (_setup, a, b) = replicas(&db).await;
    let admin_a = Admin::authorized(a.admin);
    let admin_b = Admin::authorized(b.admin);
    let token = nuts_token(RECEIVER);
    assert_eq!(decide(b.grpc, read(&token, "Patient/1")).await.status, 403);

    let created = admin_a.create(&flow("transfer-1", "Patient/1")).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let took = decides(b.grpc, "Patient/1", 200, PROPAGATION).await;
    assert!(
        took.is_some(),
        "a flow created via A: B does not allow within 1 s"
    );
    println!("created via A, allowed on B after {took:?}");

    let revoked = admin_a.revoke("transfer-1").await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let took = decides(b.grpc, "Patient/1", 403, PROPAGATION).await;
    assert!(
        took.is_some(),
        "a flow revoked via A: B does not deny within 1 s"
    );
    println!("revoked via A, denied on B after {took:?}");

    // And the other way round.
    let created = admin_b.create(&flow("transfer-2", "Patient/2")).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let took = decides(a.grpc, "Patient/2", 200, PROPAGATION).await;
    assert!(
        took.is_some(),
        "a flow created via B: A does not allow within 1 s"
    );

    // A bulk import via A: every flow reaches B.
    let bulk: Vec<Value> = (0..2500)
        .map(|i| flow(&format!("bulk-{i:04}"), &format!("Patient/b{i}")))
        .collect();
    let reply = admin_a.post("/v1/flows/import", &json!(bulk)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"created": 2500, "unchanged": 0}));
    for resource in ["Patient/b0", "Patient/b1234", "Patient/b2499"] {
        let took = decides(b.grpc, resource, 200, PROPAGATION).await;
        assert!(took.is_some(), "{resource} of an import via A: not on B");
    }
    let listed = admin_b.list_all("", 1000).await;
    assert_eq!(listed.len(), 2502);
    // Revoked flows leave the index; 2500 imported and transfer-2 remain, on both.
    for replica in [&a, &b] {
        let ready: Value = reqwest::get(format!("http://{}/readyz", replica.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["flows"]["count"], 2501, "{ready}");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_replica_survives_a_dropped_connection_and_catches_up() {
    let Some(db) = Database::create().await else {
        return;
    };
    let (_setup, a, b) = replicas(&db).await;
    let admin_a = Admin::authorized(a.admin);
    let admin_b = Admin::authorized(b.admin);
    assert_eq!(
        admin_a.create(&flow("before", "Patient/1")).await.status,
        201
    );
    assert!(
        decides(b.grpc, "Patient/1", 200, PROPAGATION)
            .await
            .is_some()
    );

    let terminated = db.terminate(Some("sluis-b")).await;
    assert!(terminated >= 1, "B's listener had no connection to cut");
    // B decides from its index meanwhile.
    let token = nuts_token(RECEIVER);
    for _ in 0..20 {
        let answer = decide(b.grpc, read(&token, "Patient/1")).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }

    let created = admin_a.create(&flow("after", "Patient/2")).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let took = decides(b.grpc, "Patient/2", 200, RECOVERY).await;
    assert!(
        took.is_some(),
        "B did not catch up after its connection dropped"
    );
    println!("created via A after B's connections were cut: allowed on B after {took:?}");
    let listening = within(RECOVERY, || db.listening("sluis-b")).await;
    assert!(listening.is_some(), "B listens again");

    // B writes again, and A sees it as quickly as before.
    let created = admin_b.create(&flow("from-b", "Patient/3")).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert!(
        decides(a.grpc, "Patient/3", 200, PROPAGATION)
            .await
            .is_some()
    );
    a.stop().await;
    b.stop().await;
}

/// Decisions on both replicas, one after another until stopped: how many, and how many
/// were not the expected allow.
struct Load {
    stop: Arc<AtomicBool>,
    decided: Arc<AtomicUsize>,
    wrong: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(replicas: [std::net::SocketAddr; 2], resource: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let decided = Arc::new(AtomicUsize::new(0));
        let wrong = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (stop, decided, wrong) = (stop.clone(), decided.clone(), wrong.clone());
            async move {
                let token = nuts_token(RECEIVER);
                // One connection per replica, as Envoy keeps.
                let mut deciders = Vec::new();
                for grpc in replicas {
                    deciders.push(Decider::connect(grpc).await);
                }
                while !stop.load(Ordering::Relaxed) {
                    for decider in &mut deciders {
                        let answer = decider.decide(read(&token, resource)).await;
                        decided.fetch_add(1, Ordering::Relaxed);
                        if answer.status != 200 {
                            wrong.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        Load {
            stop,
            decided,
            wrong,
            task,
        }
    }

    /// (decided, not allowed) since the start.
    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
        (
            self.decided.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_away_writes_fail_cleanly_and_decisions_go_on() {
    let Some(db) = Database::create().await else {
        return;
    };
    let (_setup, a, b) = replicas(&db).await;
    let admin_a = Admin::authorized(a.admin);
    assert_eq!(
        admin_a.create(&flow("before", "Patient/1")).await.status,
        201
    );
    assert!(
        decides(b.grpc, "Patient/1", 200, PROPAGATION)
            .await
            .is_some()
    );

    let load = Load::start([a.grpc, b.grpc], "Patient/1");
    db.go_away().await;
    let away = std::time::Instant::now();

    // Every write is refused with a JSON 503, and nothing is written.
    let unavailable = |reply: &Reply, what: &str| {
        assert_eq!(reply.status, 503, "{what}: {}", reply.text);
        assert_eq!(reply.headers["content-type"], "application/json", "{what}");
        assert_eq!(reply.body["error"], "unavailable", "{what}: {}", reply.text);
    };
    let writes = (0..5).map(|i| {
        let admin_a = &admin_a;
        async move {
            admin_a
                .create(&flow(&format!("during-{i}"), &format!("Patient/d{i}")))
                .await
        }
    });
    for reply in futures_util::future::join_all(writes).await {
        unavailable(&reply, "a create");
    }
    let reply = admin_a
        .post("/v1/flows/import", &json!([flow("import-1", "Patient/i1")]))
        .await;
    unavailable(&reply, "an import");
    unavailable(&admin_a.revoke("before").await, "a revoke");
    unavailable(&admin_a.get("/v1/flows/before").await, "a read");

    // Decisions go on from the index, and the replicas stay ready.
    let token = nuts_token(RECEIVER);
    for replica in [&a, &b] {
        assert_eq!(
            decide(replica.grpc, read(&token, "Patient/1")).await.status,
            200
        );
        assert_eq!(
            decide(replica.grpc, read(&token, "Patient/d0"))
                .await
                .status,
            403
        );
        let ready = reqwest::get(format!("http://{}/readyz", replica.admin))
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
    }

    // Away as long as a quick restart, so the replicas' listeners fail to reconnect a few
    // times and back off; decisions keep coming all along.
    let during = load.decided.load(Ordering::Relaxed);
    tokio::time::sleep_until((away + Duration::from_secs(3)).into()).await;
    let during = load.decided.load(Ordering::Relaxed) - during;
    assert!(
        during >= 10,
        "only {during} decisions while the database was away"
    );
    db.come_back().await;
    // The first write after the database is back succeeds; 201, not 200: the refused
    // attempt wrote nothing.
    let created = admin_a.create(&flow("during-0", "Patient/d0")).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let took = decides(b.grpc, "Patient/d0", 200, RECOVERY).await;
    assert!(
        took.is_some(),
        "B did not catch up after the database came back"
    );
    println!("database back: a flow created via A allowed on B after {took:?}");

    let (decided, wrong) = load.finish().await;
    assert_eq!(wrong, 0, "{wrong} of {decided} decisions were not allowed");
    assert!(decided >= 10, "only {decided} decisions under load");

    // The refused revoke and import left no trace.
    let stored = admin_a.get("/v1/flows/before").await;
    assert_eq!(stored.status, 200, "{}", stored.text);
    assert!(stored.body.get("revoked_at").is_none(), "{}", stored.text);
    assert_eq!(admin_a.list_all("", 100).await, ["before", "during-0"]);
    a.stop().await;
    b.stop().await;
}
