//! The durable flow store: SQLite (a file, WAL, synchronous commits) by default,
//! PostgreSQL when `store.url` is `postgres://...` and several replicas share flows.
//!
//! Every write gets a version one above the highest in the table, and writes are
//! serialized (a mutex for SQLite, a transaction-scoped advisory lock for PostgreSQL), so
//! versions are committed in order. An index catches up by fetching the rows with a
//! version above its own, which makes one mechanism serve the first load, a replica's
//! own writes, PostgreSQL `NOTIFY`s from other replicas, reconnects and the periodic poll.
//! Flows are never deleted: a revoke is a write, so it reaches every replica the same way.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, SqlSafeStr};

use schemars::JsonSchema;
use serde::Deserialize;
use sluis_core::authn::settings::Secret;
use sluis_core::flows::{Flow, FlowIndex};

/// The PostgreSQL channel replicas listen on; the payload is the committed version.
const CHANNEL: &str = "sluis_flows";
/// Serializes writers across replicas on PostgreSQL (an arbitrary, fixed key).
const WRITE_LOCK: i64 = 0x5115_f10e;
/// Rows fetched per catch-up query.
const CATCH_UP_BATCH: i64 = 10_000;
/// Flows written per statement in a bulk import.
const IMPORT_BATCH: usize = 1000;

/// The flow store.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite:flows.db` (a file, relative to this config's directory, created when
    /// missing), `sqlite::memory:` (tests), or `postgres://user@host:5432/db` when several
    /// replicas share flows. Put the password in `password`, not here.
    pub url: String,
    /// The PostgreSQL password, from an environment variable or file.
    pub password: Option<Secret>,
    /// Database connections, at most.
    #[serde(default = "default_store_connections")]
    pub max_connections: u32,
    /// How long a write may take in all (waiting for another write, a connection, the
    /// statements and the commit) before failing with 503; an import gets this for
    /// every 1000 flows.
    #[serde(default = "default_store_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// How often the index checks the store for changes it was not told about (with
    /// PostgreSQL, changes are pushed; this is the safety net).
    #[serde(default = "default_store_poll", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub poll_interval: Duration,
}

fn default_store_connections() -> u32 {
    8
}

fn default_store_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_store_poll() -> Duration {
    Duration::from_secs(10)
}

/// Which flows to list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    pub actor: Option<String>,
    pub purpose: Option<String>,
    pub patient: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("flow `{0}` exists with different content")]
    Conflict(String),
    #[error("{0}")]
    Database(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        StoreError::Database(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> StoreError {
        StoreError::Database(format!("migrating the flow store: {e}"))
    }
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

pub struct Store {
    pool: Pool,
    /// One writer at a time in this process (SQLite has no advisory locks).
    write: tokio::sync::Mutex<()>,
    /// One catch-up at a time: applying an older fetch after a newer one would undo it.
    catching_up: tokio::sync::Mutex<()>,
    /// Where the store lives, without credentials, for logs.
    pub location: String,
    /// The most a write may take, from waiting for the writer lock to the commit.
    timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.location)
            .finish()
    }
}

fn migrator(sql: &'static str) -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        "flows".into(),
        MigrationType::Simple,
        sql.into_sql_str(),
        false,
    )])
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE flows (
    id TEXT PRIMARY KEY NOT NULL,
    actor TEXT NOT NULL,
    purpose TEXT NOT NULL,
    patient TEXT,
    revoked INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL,
    document TEXT NOT NULL
);
CREATE INDEX flows_version ON flows (version);
CREATE INDEX flows_actor ON flows (actor, id);
CREATE INDEX flows_purpose ON flows (purpose, id);
CREATE INDEX flows_patient ON flows (patient, id);
";

const POSTGRES_SCHEMA: &str = "
CREATE TABLE flows (
    id TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    purpose TEXT NOT NULL,
    patient TEXT,
    revoked BOOLEAN NOT NULL DEFAULT FALSE,
    version BIGINT NOT NULL,
    document TEXT NOT NULL
);
CREATE INDEX flows_version ON flows (version);
CREATE INDEX flows_actor ON flows (actor, id);
CREATE INDEX flows_purpose ON flows (purpose, id);
CREATE INDEX flows_patient ON flows (patient, id);
";

/// The statements whose text differs between SQLite and PostgreSQL; the steps around
/// them are the same for both (`import_in!`, `revoke_in!`).
struct Dialect {
    /// Inserts a JSON array of flows (bind: first version - 1, the array), skipping ids
    /// that exist; returns the inserted ids.
    insert: &'static str,
    /// The stored documents of the ids in a JSON array of flows.
    existing: &'static str,
    /// One flow's document by id.
    document: &'static str,
    /// Marks a flow revoked (bind: document, id) with the next version; returns it.
    revoke: &'static str,
    /// Rows after a version, in version order (bind: version, limit).
    after: &'static str,
}

const SQLITE: Dialect = Dialect {
    insert: "INSERT INTO flows (id, actor, purpose, patient, revoked, version, document)
             SELECT json_extract(value, '$.id'), json_extract(value, '$.actor'),
                    json_extract(value, '$.purpose'), json_extract(value, '$.patient'),
                    json_extract(value, '$.revoked_at') IS NOT NULL,
                    ? + key + 1, value
             FROM json_each(?) WHERE true
             ON CONFLICT (id) DO NOTHING RETURNING id",
    existing: "SELECT document FROM flows WHERE id IN
               (SELECT json_extract(value, '$.id') FROM json_each(?))",
    document: "SELECT document FROM flows WHERE id = ?",
    revoke: "UPDATE flows SET revoked = 1, document = ?,
             version = (SELECT MAX(version) + 1 FROM flows) WHERE id = ? RETURNING version",
    after: "SELECT version, document FROM flows WHERE version > ? ORDER BY version LIMIT ?",
};

const POSTGRES: Dialect = Dialect {
    insert: "INSERT INTO flows (id, actor, purpose, patient, revoked, version, document)
             SELECT doc->>'id', doc->>'actor', doc->>'purpose', doc->>'patient',
                    doc ? 'revoked_at', $1 + n, doc::text
             FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS t(doc, n)
             ON CONFLICT (id) DO NOTHING RETURNING id",
    existing: "SELECT document FROM flows WHERE id IN
               (SELECT doc->>'id' FROM jsonb_array_elements($1::jsonb) AS t(doc))",
    document: "SELECT document FROM flows WHERE id = $1",
    revoke: "UPDATE flows SET revoked = TRUE, document = $1,
             version = (SELECT MAX(version) + 1 FROM flows) WHERE id = $2 RETURNING version",
    after: "SELECT version, document FROM flows WHERE version > $1 ORDER BY version LIMIT $2",
};

/// The body of an import in transaction `$tx` (either database): inserts `$flows` in
/// batches with consecutive versions and checks that every one not inserted equals
/// what is stored. Gives `(created, last version)`; `?` leaves on any error, and
/// dropping the transaction then rolls it back.
macro_rules! import_in {
    ($tx:ident, $dialect:expr, $flows:expr) => {{
        let mut version: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM flows")
            .fetch_one(&mut *$tx)
            .await?;
        let mut created = 0;
        for batch in $flows.chunks(IMPORT_BATCH) {
            let documents = documents(batch)?;
            let inserted: Vec<String> = sqlx::query_scalar($dialect.insert)
                .bind(version)
                .bind(&documents)
                .fetch_all(&mut *$tx)
                .await?;
            version += batch.len() as i64;
            created += inserted.len();
            if inserted.len() < batch.len() {
                let existing: Vec<String> = sqlx::query_scalar($dialect.existing)
                    .bind(&documents)
                    .fetch_all(&mut *$tx)
                    .await?;
                check_unchanged(batch, &inserted, &existing)?;
            }
        }
        (created, version)
    }};
}

/// The body of a revoke in transaction `$tx`: `None` without such a flow, else the flow
/// as revoked and the new version (`None` when it was revoked already: nothing written).
macro_rules! revoke_in {
    ($tx:ident, $dialect:expr, $id:expr, $at:expr) => {{
        let document: Option<String> = sqlx::query_scalar($dialect.document)
            .bind($id)
            .fetch_optional(&mut *$tx)
            .await?;
        match document.as_deref().map(parse).transpose()? {
            None => None,
            Some(flow) if flow.revoked_at.is_some() => Some((flow, None)),
            Some(mut flow) => {
                flow.revoked_at = Some($at);
                let version: i64 = sqlx::query_scalar($dialect.revoke)
                    .bind(document_of(&flow)?)
                    .bind($id)
                    .fetch_one(&mut *$tx)
                    .await?;
                Some((flow, Some(version)))
            }
        }
    }};
}

/// SQLite's own message ("unable to open database file") names no file: this one names
/// the file and the usual cause, a directory the service's user cannot write (a container's
/// non-root user and a volume owned by root).
fn cannot_open(file: Option<&Path>, error: String) -> StoreError {
    match file {
        Some(file) => StoreError::Database(format!(
            "cannot open the flow store `{}`: {error} (does its directory exist, and may this user write to it?)",
            file.display()
        )),
        None => StoreError::Database(error),
    }
}

impl Store {
    /// Opens the store. `sqlite:PATH` (relative to `base_dir`; created when missing) or
    /// `sqlite::memory:` is opened and migrated now, so a bad path stops the start;
    /// `postgres://...` connects on first use and is migrated by [`Store::migrate`].
    pub async fn connect(config: &StoreConfig, base_dir: &Path) -> Result<Store, StoreError> {
        let url = config.url.as_str();
        let pool = if let Some(rest) = url.strip_prefix("sqlite:") {
            let file = (rest != ":memory:").then(|| base_dir.join(rest.trim_start_matches("//")));
            let options = match &file {
                None => SqliteConnectOptions::new().in_memory(true),
                Some(file) => SqliteConnectOptions::new()
                    .filename(file)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // Acknowledged means on disk, even across a power cut.
                    .synchronous(SqliteSynchronous::Full),
            }
            .busy_timeout(Duration::from_secs(5));
            let max = if rest == ":memory:" {
                1
            } else {
                config.max_connections
            };
            let pool = SqlitePoolOptions::new()
                .max_connections(max)
                .acquire_timeout(config.timeout)
                .connect_with(options)
                .await
                .map_err(|e| cannot_open(file.as_deref(), e.to_string()))?;
            migrator(SQLITE_SCHEMA)
                .run(&pool)
                .await
                .map_err(|e| cannot_open(file.as_deref(), StoreError::from(e).to_string()))?;
            Pool::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut options: PgConnectOptions = url.parse()?;
            if let Some(password) = &config.password {
                let password = password.resolve(base_dir).map_err(StoreError::Database)?;
                options = options.password(&String::from_utf8_lossy(&password));
            }
            // Lazily: a database that is down at start delays readiness, not the start.
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(config.timeout)
                .connect_lazy_with(options);
            Pool::Postgres(pool)
        } else {
            return Err(StoreError::Database(format!(
                "store.url must start with sqlite: or postgres://, not `{}`",
                redact(url)
            )));
        };
        Ok(Store {
            pool,
            write: tokio::sync::Mutex::new(()),
            catching_up: tokio::sync::Mutex::new(()),
            location: redact(url),
            timeout: config.timeout,
        })
    }

    /// Brings the schema up to date (idempotent; concurrent replicas are serialized by
    /// sqlx's migration lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => migrator(SQLITE_SCHEMA).run(pool).await?,
            Pool::Postgres(pool) => migrator(POSTGRES_SCHEMA).run(pool).await?,
        }
        Ok(())
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Creates a flow unless one with its id exists. `Ok(true)` when created, `Ok(false)`
    /// when an identical flow was there, a conflict when it differs.
    pub async fn create(&self, flow: &Flow) -> Result<bool, StoreError> {
        Ok(self.import(std::slice::from_ref(flow)).await? == 1)
    }

    /// Creates every flow that does not exist yet, in one transaction: on any conflict
    /// nothing is written. Returns how many were created.
    /// Takes at most `store.timeout` for each `IMPORT_BATCH` flows begun: a single
    /// create the timeout, the largest import a hundred times it.
    pub async fn import(&self, flows: &[Flow]) -> Result<usize, StoreError> {
        let batches = flows.len().div_ceil(IMPORT_BATCH).max(1);
        let bound = self.timeout * u32::try_from(batches).unwrap_or(u32::MAX);
        self.bounded(bound, self.import_unbounded(flows)).await
    }

    /// A write within `store.timeout` as a whole. The pool's acquire timeout alone
    /// bounds only getting a connection: a write queued behind another for the writer
    /// lock, or a query on a connection whose server stopped answering, took longer
    /// (twice the timeout in an outage). Dropping the future rolls the transaction back
    /// (nothing acknowledged is lost: the client gets 503 and may retry, writes are
    /// idempotent).
    async fn bounded<T>(
        &self,
        bound: Duration,
        write: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(bound, write)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Database(format!(
                    "the flow store did not complete the write within {bound:?} (store.timeout)"
                )))
            })
    }

    async fn import_unbounded(&self, flows: &[Flow]) -> Result<usize, StoreError> {
        let _writer = self.write.lock().await;
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let (created, _) = import_in!(tx, SQLITE, flows);
                tx.commit().await?;
                Ok(created)
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                lock_writers(&mut tx).await?;
                let (created, version) = import_in!(tx, POSTGRES, flows);
                if created > 0 {
                    notify(&mut tx, version).await?;
                }
                tx.commit().await?;
                Ok(created)
            }
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Flow>, StoreError> {
        let document: Option<String> = match &self.pool {
            Pool::Sqlite(pool) => {
                sqlx::query_scalar(SQLITE.document)
                    .bind(id)
                    .fetch_optional(pool)
                    .await?
            }
            Pool::Postgres(pool) => {
                sqlx::query_scalar(POSTGRES.document)
                    .bind(id)
                    .fetch_optional(pool)
                    .await?
            }
        };
        document.as_deref().map(parse).transpose()
    }

    /// Flows matching `filter`, ordered by id, after the id `after`, at most `limit`.
    pub async fn list(
        &self,
        filter: &Filter,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<Flow>, StoreError> {
        let postgres = self.is_postgres();
        let mut sql = String::from("SELECT document FROM flows WHERE id > ");
        let mut binds: Vec<&str> = vec![after.unwrap_or("")];
        let placeholder = |sql: &mut String, binds: &Vec<&str>| {
            if postgres {
                sql.push_str(&format!("${}", binds.len()));
            } else {
                sql.push('?');
            }
        };
        placeholder(&mut sql, &binds);
        // Fixed column names only: the values are bound, never spliced.
        for (column, value) in [
            ("actor", &filter.actor),
            ("purpose", &filter.purpose),
            ("patient", &filter.patient),
        ] {
            if let Some(value) = value {
                binds.push(value);
                sql.push_str(&format!(" AND {column} = "));
                placeholder(&mut sql, &binds);
            }
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {limit}"));
        let documents: Vec<String> = match &self.pool {
            Pool::Sqlite(pool) => {
                let mut query = sqlx::query_scalar(AssertSqlSafe(sql));
                for bind in binds {
                    query = query.bind(bind);
                }
                query.fetch_all(pool).await?
            }
            Pool::Postgres(pool) => {
                let mut query = sqlx::query_scalar(AssertSqlSafe(sql));
                for bind in binds {
                    query = query.bind(bind);
                }
                query.fetch_all(pool).await?
            }
        };
        documents.iter().map(|d| parse(d)).collect()
    }

    /// Marks a flow revoked at `at`, unless it already is. `None` when there is no such
    /// flow.
    pub async fn revoke(&self, id: &str, at: DateTime<Utc>) -> Result<Option<Flow>, StoreError> {
        self.bounded(self.timeout, self.revoke_unbounded(id, at))
            .await
    }

    async fn revoke_unbounded(
        &self,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Flow>, StoreError> {
        let _writer = self.write.lock().await;
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let revoked = revoke_in!(tx, SQLITE, id, at);
                if let Some((_, Some(_))) = &revoked {
                    tx.commit().await?;
                }
                Ok(revoked.map(|(flow, _)| flow))
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                lock_writers(&mut tx).await?;
                let revoked = revoke_in!(tx, POSTGRES, id, at);
                if let Some((_, Some(version))) = &revoked {
                    notify(&mut tx, *version).await?;
                    tx.commit().await?;
                }
                Ok(revoked.map(|(flow, _)| flow))
            }
        }
    }

    /// Every flow, in version order: for export.
    pub async fn all_after(&self, version: i64) -> Result<Vec<(i64, Flow)>, StoreError> {
        let rows: Vec<(i64, String)> = match &self.pool {
            Pool::Sqlite(pool) => {
                sqlx::query_as(SQLITE.after)
                    .bind(version)
                    .bind(CATCH_UP_BATCH)
                    .fetch_all(pool)
                    .await?
            }
            Pool::Postgres(pool) => {
                sqlx::query_as(POSTGRES.after)
                    .bind(version)
                    .bind(CATCH_UP_BATCH)
                    .fetch_all(pool)
                    .await?
            }
        };
        rows.into_iter()
            .map(|(version, document)| Ok((version, parse(&document)?)))
            .collect()
    }

    /// [`Store::catch_up`] within `store.timeout`: after an acknowledged write, so a
    /// database that stops answering right after the commit cannot hold the answer.
    pub async fn catch_up_bounded(&self, index: &FlowIndex) -> Result<usize, StoreError> {
        self.bounded(self.timeout, self.catch_up(index)).await
    }

    /// Applies every change the index has not seen. Returns how many rows were applied.
    pub async fn catch_up(&self, index: &FlowIndex) -> Result<usize, StoreError> {
        let _one = self.catching_up.lock().await;
        let mut applied = 0;
        loop {
            let rows = self.all_after(index.version()).await?;
            let fetched = rows.len();
            index.apply(rows.iter().map(|(version, flow)| (flow, *version)));
            applied += fetched;
            if (fetched as i64) < CATCH_UP_BATCH {
                return Ok(applied);
            }
        }
    }

    /// Keeps `index` current until the process ends: the first full load (then the index
    /// is marked loaded), then on every PostgreSQL notification, after every reconnect,
    /// and every `poll` (which also covers SQLite files written by another process).
    /// Expired flows are swept out of the index as it goes. Errors are logged and
    /// retried: decisions go on from the index while the database is away.
    pub async fn sync(self: Arc<Store>, index: Arc<FlowIndex>, poll: Duration) {
        let mut backoff = Duration::from_millis(100);
        while !index.is_loaded() {
            let loaded = match self.migrate().await {
                Ok(()) => self.catch_up(&index).await,
                Err(e) => Err(e),
            };
            match loaded {
                Ok(count) => {
                    index.mark_loaded();
                    tracing::info!(flows = index.len(), rows = count, store = %self.location, "flow index loaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, store = %self.location, "loading the flow index failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let mut sweep = tokio::time::interval(Duration::from_secs(60));
        match &self.pool {
            Pool::Sqlite(_) => loop {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => self.logged_catch_up(&index).await,
                    _ = sweep.tick() => { index.sweep_expired(Utc::now().timestamp()); }
                }
            },
            Pool::Postgres(pool) => loop {
                let mut listener = match PgListener::connect_with(pool).await {
                    Ok(listener) => listener,
                    Err(e) => {
                        tracing::warn!(error = %e, "flow change listener cannot connect; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                if let Err(e) = listener.listen(CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed; retrying");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                backoff = Duration::from_millis(100);
                // Whatever happened while not listening.
                self.logged_catch_up(&index).await;
                loop {
                    tokio::select! {
                        received = listener.try_recv() => match received {
                            Ok(Some(_)) => self.logged_catch_up(&index).await,
                            Ok(None) => {
                                tracing::warn!("flow change listener lost its connection; catching up");
                                self.logged_catch_up(&index).await;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "flow change listener failed; reconnecting");
                                tokio::time::sleep(backoff).await;
                                break;
                            }
                        },
                        _ = tokio::time::sleep(poll) => self.logged_catch_up(&index).await,
                        _ = sweep.tick() => { index.sweep_expired(Utc::now().timestamp()); }
                    }
                }
            },
        }
    }

    async fn logged_catch_up(&self, index: &FlowIndex) {
        match self.catch_up(index).await {
            Ok(0) => {}
            Ok(count) => tracing::debug!(
                rows = count,
                version = index.version(),
                "flow index caught up"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "flow index catch-up failed; decisions use the index as it is")
            }
        }
    }
}

/// Serializes writers across replicas until the transaction ends, so versions commit in
/// order and a catch-up by version misses nothing.
async fn lock_writers(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITE_LOCK)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn notify(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    version: i64,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(version.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn document_of(flow: &Flow) -> Result<String, StoreError> {
    serde_json::to_string(flow).map_err(|e| StoreError::Database(e.to_string()))
}

fn documents(flows: &[Flow]) -> Result<String, StoreError> {
    serde_json::to_string(flows).map_err(|e| StoreError::Database(e.to_string()))
}

fn parse(document: &str) -> Result<Flow, StoreError> {
    serde_json::from_str(document)
        .map_err(|e| StoreError::Database(format!("a stored flow does not parse: {e}")))
}

/// Flows of `batch` that were not inserted must equal what is stored (ignoring a
/// revocation, which a re-create does not undo).
fn check_unchanged(
    batch: &[Flow],
    inserted: &[String],
    existing: &[String],
) -> Result<(), StoreError> {
    let stored: std::collections::HashMap<String, Flow> = existing
        .iter()
        .map(|d| parse(d).map(|f| (f.id.clone(), f)))
        .collect::<Result<_, _>>()?;
    let inserted: std::collections::HashSet<&str> = inserted.iter().map(String::as_str).collect();
    for flow in batch {
        if inserted.contains(flow.id.as_str()) {
            continue;
        }
        let same = stored.get(&flow.id).is_some_and(|s| {
            let mut s = s.clone();
            s.revoked_at = flow.revoked_at;
            &s == flow
        });
        if !same {
            return Err(StoreError::Conflict(flow.id.clone()));
        }
    }
    Ok(())
}

/// A database URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{user}@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A database that accepts connections and never says a word: the shape of an
    /// outage where packets vanish or the server hangs.
    async fn silent_database() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        (addr, task)
    }

    fn flow(id: &str) -> Flow {
        serde_json::from_value(serde_json::json!({
            "id": id, "actor": "urn:a", "purpose": "p", "resources": [],
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_write_takes_at_most_the_store_timeout_in_an_outage() {
        let (addr, _server) = silent_database().await;
        let config = StoreConfig {
            url: format!("postgres://postgres@{addr}/test"),
            password: None,
            max_connections: 8,
            timeout: Duration::from_secs(1),
            poll_interval: Duration::from_secs(10),
        };
        let store = Arc::new(Store::connect(&config, Path::new(".")).await.unwrap());
        let started = std::time::Instant::now();
        // Writes queue for the writer lock: each must still end within its own bound.
        let writes: Vec<_> = (0..4)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let result = store.create(&flow(&format!("f{i}"))).await;
                    (result, started.elapsed())
                })
            })
            .collect();
        for write in writes {
            let (result, took) = write.await.unwrap();
            // A database error is what the API answers 503 to.
            let error = result.expect_err("a write to a silent database fails");
            assert!(matches!(error, StoreError::Database(_)), "{error}");
            // Generous: the bound is 1 s; before, the fourth write took 4 s.
            assert!(took < Duration::from_millis(2500), "a write took {took:?}");
        }
    }
}
