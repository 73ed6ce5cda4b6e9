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

/// Applies `O::AUDIENCE` to `request` for `caller`: what
/// [`Operation::authorize`] does unless an operation adds checks of its own.
pub fn apply_audience<O: Operation>(request: &mut O, caller: &Caller) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::Method;

    #[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
    struct Scoped {
        tenant: Option<TenantId>,
    }

    impl Operation for Scoped {
        const METHOD: Method = Method::Post;
        const ROUTE: &'static str = "/v1/scoped";
        type Response = ();
        const AUDIENCE: Audience<Self> = Audience::Tenant(|request| &mut request.tenant);
    }

    #[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
    struct Manage {}

    impl Operation for Manage {
        const METHOD: Method = Method::Post;
        const ROUTE: &'static str = "/v1/manage";
        type Response = ();
    }

    fn tenant(name: &str) -> Caller {
        Caller::Tenant(TenantId::new(name).unwrap())
    }

    #[test]
    fn a_tenant_is_scoped_to_itself_and_cannot_name_another() {
        let mut open = Scoped { tenant: None };
        open.authorize(&tenant("ada")).unwrap();
        assert_eq!(open.tenant.as_ref().map(TenantId::as_str), Some("ada"));

        let mut own = Scoped { tenant: Some(TenantId::new("ada").unwrap()) };
        assert!(own.authorize(&tenant("ada")).is_ok());
        let mut other = Scoped { tenant: Some(TenantId::new("bob").unwrap()) };
        let err = other.authorize(&tenant("ada")).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Forbidden);

        // The operator acts for any tenant, or for none.
        let mut any = Scoped { tenant: Some(TenantId::new("bob").unwrap()) };
        any.authorize(&Caller::Operator).unwrap();
        assert_eq!(any.tenant.as_ref().map(TenantId::as_str), Some("bob"));
        let mut none = Scoped { tenant: None };
        none.authorize(&Caller::Operator).unwrap();
        assert!(none.tenant.is_none());
    }

    #[test]
    fn operator_operations_refuse_tenants() {
        assert!(Manage {}.authorize(&Caller::Operator).is_ok());
        assert_eq!(Manage {}.authorize(&tenant("ada")).unwrap_err().kind, crate::ErrorKind::Forbidden);
        assert!(!Manage::AUDIENCE.admits(&tenant("ada")) && Manage::AUDIENCE.admits(&Caller::Operator));
        assert!(Scoped::AUDIENCE.admits(&tenant("ada")));
    }
}
