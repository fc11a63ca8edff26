//! Controller and agents: a plugin's work on a database host runs there, through `cairn agent`
//! reached over SSH (docs/architecture.md, "Controller and agents").
//!
//! - [`wire`]: frames and flow control on one pipe; [`msg`]: the requests and replies;
//! - [`conn`]: channels over a connection, shared by both sides;
//! - [`agent`]: the host side (`cairn agent`);
//! - [`client`]: the controller side;
//! - [`chunked`]: streams cut and hashed on the agent's host, only wanted chunks sent;
//! - [`host`]: what plugins use: a [`host::Host`] runs commands and touches files either here
//!   or through its agent.

pub mod agent;
pub mod chunked;
pub mod client;
pub mod conn;
pub mod host;
pub mod msg;
pub mod tree;
pub mod wire;
