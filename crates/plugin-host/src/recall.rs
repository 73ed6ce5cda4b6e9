//! Memory recall for plugins with the `memory` grant: who a call runs for,
//! and the trait the daemon's memory layer implements.

use serde::Serialize;

/// Who a call runs for: recall from memory stays inside this scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Scope {
    /// The tenant, if the daemon serves several.
    pub tenant: Option<String>,
    /// The conversation the call belongs to, if any.
    pub conversation: Option<String>,
}

/// One remembered passage, as the memory layer returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The passage.
    pub text: String,
    /// Relevance, 0 to 1.
    pub score: f32,
}

/// The memory a plugin with the `memory` grant recalls from (the daemon's
/// memory layer implements it).
pub trait Recall: Send + Sync {
    /// Up to `limit` passages relevant to `query`, within `scope` only. The
    /// error is text because it goes to the plugin as is (the contract's
    /// `result<list<hit>, string>`).
    fn recall(&self, scope: &Scope, query: &str, limit: u32) -> Result<Vec<Hit>, String>;
}
