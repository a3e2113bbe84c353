//! Integration tests of the core pipeline (one binary, several modules).
#![cfg(not(loom))]

mod lifecycle;
mod pipeline;
mod submit;
mod support;
