//! Operations as tools for MCP clients (and, later, the agent loop): a
//! name, a title and behaviour hints on top of the operation's own types,
//! schemas and checks.

use crate::Operation;

/// How a tool behaves, for clients deciding whether to ask before calling
/// it (MCP's tool annotations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    /// Changes nothing.
    pub read_only: bool,
    /// May delete or overwrite data (meaningful when not read-only).
    pub destructive: bool,
    /// Calling it again with the same arguments has no further effect.
    pub idempotent: bool,
    /// Reaches beyond Engram's own data (files, the network).
    pub open_world: bool,
}

impl Hints {
    /// A read of Engram's own data.
    pub const READ: Self = Self { read_only: true, destructive: false, idempotent: true, open_world: false };
}

/// An operation offered as a tool.
pub trait Tool: Operation {
    /// The tool's name: `<feature>_<verb>`, letters, digits and `_` only
    /// (the character set every MCP client accepts).
    const NAME: &'static str;
    /// A short human-readable title.
    const TITLE: &'static str;
    /// Behaviour hints.
    const HINTS: Hints;
    /// Request fields a tool call may not set: the transport fills them
    /// (the tenant) or they mean nothing to a tool (`stream`). They are
    /// left out of the tool's input schema and refused as arguments.
    const HIDDEN: &'static [&'static str] = &[];
}

/// Whether `name` is a valid tool name: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
