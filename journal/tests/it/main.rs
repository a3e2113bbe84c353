//! Journal integration tests: round trips, every fault the design names, a
//! model-based property test, the real file system, and golden files.

mod chain;
mod cut;
mod engine;
mod faults;
mod fs;
mod golden;
mod hardening;
mod property;
mod retention;
mod ship;
mod skip;
mod support;
mod tail;
