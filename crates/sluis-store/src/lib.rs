//! What Sluis keeps outside its process: the flows store (SQLite or PostgreSQL, through
//! sqlx) with the API the admin doors call, and the DPoP replay cache shared by replicas
//! (Redis). The decision core reads neither directly: the store keeps the core's
//! [`sluis_core::flows::FlowIndex`] current, and the Redis cache is a
//! [`sluis_core::authn::replay::SharedReplay`].

pub mod flows;
pub mod replay;
pub mod service;

pub use flows::{Store, StoreConfig, StoreError};
pub use replay::RedisReplay;
pub use service::{Created, Filter, FlowError, Flows, Imported, Page};
