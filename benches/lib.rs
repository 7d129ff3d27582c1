//! Shared helpers for lodestone's benchmarks.
//!
//! The criterion micro-benchmarks (`micro.rs`) need nothing from here. The
//! scenario benchmark against real clients (`scenarios/`) uses the pieces
//! that are worth unit-testing on their own:
//!
//! * [`stats`]: medians and percentiles of small samples;
//! * [`krpc_load`]: a UDP load generator speaking valid KRPC, to measure how
//!   many queries a DHT bootstrap node answers and how fast;
//! * [`udp_floor`]: the least a node can spend per answer, a responder that
//!   only receives and sends, beside which the node scenario measures nodes;
//! * [`options`]: the scenario benchmark's options (arguments and environment);
//! * [`clock`]: UTC timestamps for report names without a date crate.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod clock;
pub mod krpc_load;
pub mod options;
pub mod stats;
pub mod udp_floor;
