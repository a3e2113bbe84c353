//! The replication protocol under the deterministic simulator.

mod simulator;
mod wire;
