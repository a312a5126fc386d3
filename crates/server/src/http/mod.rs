//! The HTTP face: routes only. Each module reads a request, calls the services, and renders
//! the answer or the error in the caller's dialect. Nothing under `service` imports this.

pub mod admin;
pub mod auth;
pub mod dialect;
pub mod error;
pub(crate) mod health;
pub mod metrics;
pub mod native;
pub mod openai;
pub mod uploads;
pub mod web;
