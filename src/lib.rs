//! Freshet: a self-hosted streaming platform that speaks Amazon Kinesis's wire
//! protocols. See `docs/ARCHITECTURE.md` for how the modules fit together.

pub mod analytics;
pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod consumers;
pub mod delivery;
pub mod error;
pub mod ingest;
pub mod leases;
pub mod media;
pub mod metrics;
pub mod server;
pub mod store;
pub mod streams;
pub mod telemetry;
pub mod tls;
pub mod video;
