//! The admin Unix socket: protocol (request/reply JSON), the bounded line reader, the
//! server that feeds the dispatcher, and the client used by `datasync ctl`.

pub mod client;
pub mod line;
pub mod protocol;
pub mod server;

pub use protocol::{
    AdminReply, AdminRequest, OplogReply, OplogSideReply, PairReply, StatusReply, MAX_LINE,
};
pub use server::{AdminError, AdminServer, Limits};
