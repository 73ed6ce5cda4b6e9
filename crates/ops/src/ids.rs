//! Names validated once, where they enter: a value of these types is
//! always well-formed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A name that is not well-formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {name:?} is not a valid name: use 1-128 letters, digits, '-', '_', '.' or ':'")]
pub struct InvalidId {
    /// What the name was for (`collection`, `tenant`).
    pub what: &'static str,
    /// The name given.
    pub name: String,
}

impl From<InvalidId> for crate::Error {
    fn from(err: InvalidId) -> Self {
        crate::Error::invalid(err.to_string())
    }
}

fn check(what: &'static str, name: &str) -> Result<(), InvalidId> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if valid { Ok(()) } else { Err(InvalidId { what, name: name.to_owned() }) }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `name`: 1-128 ASCII letters, digits, `-`, `_`, `.` or `:`.
            pub fn new(name: impl Into<String>) -> Result<Self, InvalidId> {
                let name = name.into();
                check($what, &name)?;
                Ok(Self(name))
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(name: String) -> Result<Self, InvalidId> {
                Self::new(name)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(name: &str) -> Result<Self, InvalidId> {
                Self::new(name)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A collection of documents (`docs`, `team:handbook`).
    CollectionName,
    "collection"
);
name_type!(
    /// Whose data this is. Tenants never see each other's documents or
    /// memories; a missing tenant is `Option::None`, never an empty name.
    TenantId,
    "tenant"
);

name_type!(
    /// A conversation of one tenant (`support-4711`, `2026-12:standup`):
    /// the scope of its memory.
    ConversationId,
    "conversation"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_once_at_the_edge() {
        assert_eq!(CollectionName::new("team:hand_book-1.0").unwrap().as_str(), "team:hand_book-1.0");
        for bad in ["", "bad name!", "é", &"x".repeat(129)] {
            let err = CollectionName::new(bad).unwrap_err();
            assert!(err.to_string().contains("is not a valid name"), "{err}");
        }
        let parsed: Result<TenantId, _> = serde_json::from_str("\"a b\"");
        assert!(parsed.unwrap_err().to_string().contains("tenant \"a b\" is not a valid name"));
        let tenant: TenantId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(serde_json::to_string(&tenant).unwrap(), "\"acme\"");
    }
}
