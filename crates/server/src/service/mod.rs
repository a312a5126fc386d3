//! What the routes use: the relay (failover and the stream commit point every frontend shares),
//! the upstream client, accounting, the link to other instances, key probing, and the memories
//! kept between requests. Nothing here imports `http`.

pub mod accounting;
pub mod admin_auth;
pub mod auth_throttle;
pub mod call_memory;
pub mod classify;
pub mod clients;
pub mod cluster;
pub mod login_throttle;
pub mod memory;
pub mod metrics;
pub mod ownership;
pub mod probe;
pub mod relay;
pub mod response_store;
pub mod settings;
pub mod upstream;
