//! Integration tests of the host side: the architecture rules and the main job.

mod architecture;
mod batches;
mod crash;
mod crash_loop;
mod hardening;
mod main_job;
mod network;
mod network_tls;
mod projector;
mod projector_model;
mod proxy;
mod restart;
mod sessions;
mod shard_crash_loop;
mod sharded;
mod snapshots;
mod support;
