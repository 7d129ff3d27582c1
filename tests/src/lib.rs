//! Shared helpers for lodestone's cross-crate and end-to-end tests.
//!
//! End-to-end tests start real processes that talk to each other over
//! sockets: libtorrent (through the python scripts in `tests/py/`), aria2,
//! transmission and the lodestone binary. House rule: such traffic never
//! leaves a fresh loopback-only network namespace. [`netns`] makes that the
//! default: a test written with [`isolated_test!`] re-executes itself under
//! `unshare -n -m` and runs its body only inside.
//!
//! The other modules start and stop real clients. Each returns a handle that
//! kills its process on drop; readiness is an explicit signal (a JSON line on
//! stdout, a BitTorrent handshake that shows a full bitfield), waited for
//! with a deadline, never a sleep.
//!
//! Nothing here skips a test: a missing tool is an error whose message says
//! to run `tests/setup`.

pub mod clients;
pub mod content;
pub mod driver;
pub mod error;
pub mod holepunch_swarm;
pub mod http;
pub mod netns;
pub mod pex_swarm;
pub mod process;
pub mod relay;
pub mod scripted_peer;
pub mod swarm;
pub mod tools;
pub mod torrent;
pub mod workdir;

pub use error::{HarnessError, Result};

#[doc(hidden)]
pub mod __private {
    pub use tokio;
}
