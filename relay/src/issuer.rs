//! TURN credentials for the libp2p node's `/conclave/turn/1.0.0` protocol, for the relay's
//! own TURN server and for the external ones it issues for.
//!
//! Every server shares a REST-API secret with the relay (its own `turn.secret`; an external
//! server's `secret_file`, the `static-auth-secret` of a coturn run with `use-auth-secret`).
//! For an identity the allowlist admits, the [`Issuer`] mints one username and password per
//! server ([`crate::access::mint`], same lifetime) and answers with them all; for any other,
//! a refusal. The allowlist and lifetime change on reload ([`Issuer::set_policy`]); the
//! servers need a restart.
//!
//! Media can so scale out over a site's coturn cluster while `conclave-relay` keeps the DHT
//! bootstrap, the circuits and the decision of who gets credentials.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use conclave_core::proto::turn::{CertificatePin, IceServer, TurnRefusal, TurnResponse};
use libp2p::PeerId;

use crate::access::{self, Allowlist, Credentials};
use crate::turn::Secret;

/// One TURN server credentials are issued for.
#[derive(Debug, Clone)]
pub struct IssuedServer {
    /// The REST-API secret it shares with the relay.
    pub secret: Secret,
    /// Its STUN/TURN URLs, as handed out.
    pub urls: Vec<String>,
    /// The pin of the certificate its `turns:` URLs present.
    pub tls_pin: Option<CertificatePin>,
}

/// Who gets credentials, and for how long.
#[derive(Debug)]
struct Policy {
    allowlist: Allowlist,
    ttl: Duration,
}

/// Mints credentials under the policy in effect. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Issuer {
    policy: Arc<RwLock<Policy>>,
    servers: Arc<[IssuedServer]>,
}

impl Issuer {
    /// An issuer for `servers` (the relay's own first, if it runs one); `None` when there is
    /// none (the relay then answers that it runs no TURN service).
    pub fn new(servers: Vec<IssuedServer>, allowlist: Allowlist, ttl: Duration) -> Option<Self> {
        if servers.is_empty() {
            return None;
        }
        Some(Self {
            policy: Arc::new(RwLock::new(Policy { allowlist, ttl })),
            servers: servers.into(),
        })
    }

    /// Puts a new allowlist and credential lifetime in effect for the next requests.
    pub fn set_policy(&self, allowlist: Allowlist, ttl: Duration) {
        let mut policy = match self.policy.write() {
            Ok(policy) => policy,
            Err(poisoned) => poisoned.into_inner(),
        };
        *policy = Policy { allowlist, ttl };
    }

    /// The answer for `peer` at `now_unix`: one server's credentials as
    /// [`TurnResponse::Credentials`] (what every client understands), several as
    /// [`TurnResponse::Servers`].
    pub fn issue(&self, peer: &PeerId, now_unix: u64) -> TurnResponse {
        let ttl = {
            let policy = match self.policy.read() {
                Ok(policy) => policy,
                Err(poisoned) => poisoned.into_inner(),
            };
            if !policy.allowlist.allows(peer) {
                return TurnResponse::Refused(TurnRefusal::NotAllowed);
            }
            policy.ttl
        };
        let mut servers: Vec<IceServer> = self
            .servers
            .iter()
            .map(|server| {
                let Credentials {
                    username,
                    password,
                    expires_unix,
                } = access::mint(server.secret.bytes(), peer, now_unix, ttl);
                IceServer {
                    urls: server.urls.clone(),
                    username,
                    credential: password,
                    expires_unix,
                    tls_pin: server.tls_pin,
                }
            })
            .collect();
        match servers.len() {
            1 => TurnResponse::Credentials(servers.remove(0)),
            _ => TurnResponse::Servers(servers),
        }
    }

    /// The servers credentials are issued for.
    pub fn servers(&self) -> &[IssuedServer] {
        &self.servers
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn server(secret: &str, url: &str) -> IssuedServer {
        IssuedServer {
            secret: Secret::new(secret),
            urls: vec![url.to_owned()],
            tls_pin: None,
        }
    }

    #[test]
    fn refuses_identities_off_the_allowlist_and_follows_a_reload() {
        let allowed = PeerId::random();
        let allowlist = Allowlist::parse(&[allowed.to_string()]).unwrap();
        let ttl = Duration::from_secs(600);
        let own = server("x", "turn:127.0.0.1:3478?transport=udp");
        let issuer = Issuer::new(vec![own], allowlist, ttl).unwrap();
        let TurnResponse::Credentials(server) = issuer.issue(&allowed, 100) else {
            panic!("allowed identity refused");
        };
        assert_eq!(server.expires_unix, 700);
        assert_eq!(
            server.credential,
            access::password_for(b"x", &server.username)
        );
        assert_eq!(
            issuer.issue(&PeerId::random(), 100),
            TurnResponse::Refused(TurnRefusal::NotAllowed)
        );
        // A reload that removes the identity stops the issuing at once.
        issuer.set_policy(Allowlist::Only(HashSet::new()), ttl);
        assert_eq!(
            issuer.issue(&allowed, 100),
            TurnResponse::Refused(TurnRefusal::NotAllowed)
        );
    }

    #[test]
    fn each_server_gets_credentials_under_its_own_secret() {
        let own = server("own secret", "turn:198.51.100.1:3478?transport=udp");
        let coturn = server("coturn secret", "turn:198.51.100.9:3478?transport=udp");
        let issuer =
            Issuer::new(vec![own, coturn], Allowlist::Open, Duration::from_secs(60)).unwrap();
        let TurnResponse::Servers(servers) = issuer.issue(&PeerId::random(), 1000) else {
            panic!("expected one entry per server");
        };
        assert_eq!(servers.len(), 2);
        for (server, secret) in servers.iter().zip(["own secret", "coturn secret"]) {
            assert_eq!(
                server.credential,
                access::password_for(secret.as_bytes(), &server.username)
            );
            assert_eq!(server.expires_unix, 1060);
        }
        assert!(Issuer::new(Vec::new(), Allowlist::Open, Duration::from_secs(60)).is_none());
    }
}
