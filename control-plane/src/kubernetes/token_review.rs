//! Identity from ServiceAccounts: an injected proxy presents its projected ServiceAccount
//! token (audience [`AUDIENCE`]) to the identity endpoint, and the API server says whose
//! it is through a `TokenReview`. The certificate then names
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>`: no join token to hand
//! out in a cluster. Join tokens keep working beside it (machines outside the cluster).
//!
//! A token is accepted only if the API server authenticates it *for our audience*: the
//! review asks about [`AUDIENCE`] alone and the answer's `status.audiences` must contain
//! it, so a pod's default token (audience: the API server) or a token minted for another
//! system cannot be replayed here, and an API server that ignores audiences is refused
//! rather than trusted.

use std::sync::Arc;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};

use crate::identity::tokens::{self, JoinTokens};
use crate::identity::{Authenticator, IdentityError, SpiffeId};

/// The audience a proxy's projected token must be issued for.
pub const AUDIENCE: &str = "tandem";
/// The username prefix of a ServiceAccount (`system:serviceaccount:<ns>:<name>`).
const SA_PREFIX: &str = "system:serviceaccount:";

/// Authenticates ServiceAccount tokens by `TokenReview`, and join tokens by the book.
pub struct ServiceAccountTokens {
    client: kube::Client,
    trust_domain: String,
    join: Arc<JoinTokens>,
}

impl std::fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountTokens")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountTokens {
    /// Reviews with `client`; names identities in `trust_domain`; `join` answers for
    /// credentials shaped like join tokens.
    pub fn new(client: kube::Client, trust_domain: &str, join: Arc<JoinTokens>) -> Self {
        ServiceAccountTokens {
            client,
            trust_domain: trust_domain.to_string(),
            join,
        }
    }

    async fn review(&self, token: &str) -> Result<SpiffeId, IdentityError> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..TokenReview::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "TokenReview failed");
                IdentityError::Unavailable(format!(
                    "the Kubernetes API cannot review the token now: {e}"
                ))
            })?;
        identity_of(answer.status.as_ref(), &self.trust_domain)
    }
}

impl Authenticator for ServiceAccountTokens {
    fn authenticate(
        &self,
        credential: &str,
        now: u64,
    ) -> impl std::future::Future<Output = Result<SpiffeId, IdentityError>> + Send {
        let join = tokens::parse(credential)
            .is_some()
            .then(|| self.join.check(credential, now));
        async move {
            match join {
                Some(result) => result,
                None => self.review(credential.trim()).await,
            }
        }
    }
}

/// The identity a review's answer vouches for, or why none (one line, no token in it).
pub fn identity_of(
    status: Option<&TokenReviewStatus>,
    trust_domain: &str,
) -> Result<SpiffeId, IdentityError> {
    let refused = |why: String| Err(IdentityError::Unauthenticated(why));
    let Some(status) = status else {
        return refused("the TokenReview came back without a status".into());
    };
    if status.authenticated != Some(true) {
        let why = status.error.as_deref().unwrap_or("no reason given");
        return refused(format!(
            "the Kubernetes API did not authenticate the token for audience {AUDIENCE:?}: {why}"
        ));
    }
    if !status.audiences.iter().flatten().any(|a| a == AUDIENCE) {
        return refused(format!(
            "the token was not issued for audience {AUDIENCE:?} (project a token with audience: {AUDIENCE})"
        ));
    }
    let username = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or_default();
    let Some((namespace, account)) = username
        .strip_prefix(SA_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
    else {
        return Err(IdentityError::Forbidden(format!(
            "{username:?} is not a ServiceAccount: only workloads get mesh identities"
        )));
    };
    Ok(SpiffeId {
        trust_domain: trust_domain.to_string(),
        namespace: namespace.to_string(),
        service_account: account.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn status(authenticated: bool, audiences: &[&str], user: &str) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(user.into()),
                ..UserInfo::default()
            }),
            error: None,
        }
    }

    #[test]
    fn a_reviewed_service_account_token_names_its_account() {
        let id = identity_of(
            Some(&status(
                true,
                &["tandem"],
                "system:serviceaccount:shop:cart",
            )),
            "td",
        )
        .unwrap();
        assert_eq!(id.to_string(), "spiffe://td/ns/shop/sa/cart");
    }

    #[test]
    fn anything_short_of_a_service_account_for_our_audience_is_refused() {
        let sa = "system:serviceaccount:shop:cart";
        for (st, code) in [
            (None, 401),
            (Some(status(false, &["tandem"], sa)), 401),
            // Authenticated, but for the API server's audience (or an audience-blind
            // reviewer): not for us.
            (Some(status(true, &[], sa)), 401),
            (
                Some(status(true, &["https://kubernetes.default.svc"], sa)),
                401,
            ),
            (Some(status(true, &["tandem"], "alice")), 403),
            (
                Some(status(true, &["tandem"], "system:serviceaccount:shop")),
                403,
            ),
            (
                Some(status(true, &["tandem"], "system:serviceaccount::x")),
                403,
            ),
            (
                Some(status(true, &["tandem"], "system:serviceaccount:a:b:c")),
                403,
            ),
        ] {
            let e = identity_of(st.as_ref(), "td").unwrap_err();
            assert_eq!(e.status().as_u16(), code, "{st:?}: {e}");
        }
    }
}
