//! Who calls an operation, and what each operation lets them do.
//!
//! The transport decides the [`Caller`] (the Unix socket's owner or the
//! operator's token: the operator; a tenant's token: that tenant), never a
//! field of the request: a model filling in tool arguments cannot forge it.
//! Each operation declares its [`Audience`]; [`Operation::authorize`]
//! applies it once, for every surface.

use crate::{Error, Operation, TenantId};

/// Who a request comes from, as its transport established it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// The daemon's owner: the Unix socket, or the operator's TCP token.
    Operator,
    /// One tenant: a tenant token. Sees and writes only its own data.
    Tenant(TenantId),
}

impl Caller {
    /// The tenant, if the caller is one.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Self::Operator => None,
            Self::Tenant(tenant) => Some(tenant),
        }
    }
}

/// Who may call an operation.
pub enum Audience<O> {
    /// Only the operator (management, collection-wide work).
    Operator,
    /// Anyone: the answer holds no tenant's data.
    Anyone,
    /// Anyone, each tenant within its own data: the request's tenant
    /// field (this accessor) is set from the caller.
    Tenant(fn(&mut O) -> &mut Option<TenantId>),
}

impl<O> Audience<O> {
    /// Whether `caller` may call the operation at all.
    pub fn admits(&self, caller: &Caller) -> bool {
        matches!((self, caller), (_, Caller::Operator) | (Self::Anyone | Self::Tenant(_), Caller::Tenant(_)))
    }
}

/// Applies `O::AUDIENCE` to `request` for `caller`.
pub(crate) fn authorize<O: Operation>(request: &mut O, caller: &Caller) -> Result<(), Error> {
    let Caller::Tenant(tenant) = caller else {
        return Ok(());
    };
    match O::AUDIENCE {
        Audience::Anyone => Ok(()),
        Audience::Operator => {
            Err(Error::forbidden(format!("{} is for the operator; tenant `{tenant}`'s token cannot call it", O::ROUTE)))
        }
        Audience::Tenant(field) => {
            let slot = field(request);
            match slot {
                Some(named) if named != tenant => Err(Error::forbidden(format!(
                    "this token belongs to tenant `{tenant}`; it cannot act for tenant `{named}`"
                ))),
                _ => {
                    *slot = Some(tenant.clone());
                    Ok(())
                }
            }
        }
    }
}
