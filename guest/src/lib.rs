//! berth's guest agent. In a microVM it is PID 1: it prepares the guest, receives the same
//! OCI runtime spec the container backend runs, runs the process, and carries its stdio,
//! terminal, signals and exit status over one framed channel. The same code runs as an
//! ordinary process over any byte stream, which is how its protocol is tested.

pub mod archive;
pub mod net;
pub mod protocol;
pub mod session;
