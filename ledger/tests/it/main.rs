//! Ledger tests: semantics scenarios, the reference-model property test,
//! invariants, and golden encodings.

mod golden;
mod model;
mod property;
mod semantics;
mod sharding;
mod support;
