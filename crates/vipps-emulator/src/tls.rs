//! The TLS edge: unmodified clients reach the emulator as `api.vipps.no` and `apitest.vipps.no`.
//!
//! A local certificate authority is created once and kept in the store's metadata (like the token signing key),
//! so a client that trusts it keeps working across restarts, and instances that share a PostgreSQL store share
//! it. At every start it issues a certificate per API hostname; the rustls server picks one by SNI. A handshake
//! for any other name, or without a name, fails, and only that connection is closed.
//!
//! The authority's certificate carries name constraints for the two API hostnames: a user who trusts it
//! (system-wide, even) trusts it for nothing else, so its key, which lives in the emulator's store, cannot be used
//! to impersonate any other site.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ResolvesServerCertUsingSni;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use vipps_types::env::API_HOSTS;

use crate::platform::middleware::ConnInfo;

/// The metadata key under which the certificate authority is stored.
pub(crate) const CA_META_KEY: &str = "tls_ca";

/// How long a new certificate authority is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// A stored authority this close to its end is replaced (clients must then trust the new one).
const CA_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// Server certificates are issued at every start; 397 days is the longest validity clients that cap it accept.
const LEAF_LIFETIME: Duration = Duration::from_secs(397 * 86_400);
/// Certificates start a day early so that a client whose clock is a little behind accepts them.
const BACKDATE: Duration = Duration::from_secs(86_400);
/// How long a client may take to complete its handshake before the connection is closed.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS edge could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key could not be generated.
    #[error("cannot generate the local certificate authority or a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The certificate authority in the store cannot be used.
    #[error("the certificate authority kept in the store cannot be read: {0}")]
    Stored(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The stored form of the certificate authority. The key is a secret: this type has no `Debug`.
#[derive(Serialize, Deserialize)]
struct StoredCa {
    common_name: String,
    cert_pem: String,
    key_pem: String,
    not_after_unix: i64,
}

/// The emulator's local certificate authority.
pub(crate) struct LocalCa {
    common_name: String,
    cert_pem: String,
    not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("LocalCa")
            .field("common_name", &self.common_name)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The authority's parameters. Rebuilt identically from the stored common name when the authority is loaded,
/// so the issuer name and key identifier of every certificate it signs match its own certificate.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "vipps-emulator");
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.name_constraints = Some(NameConstraints {
        permitted_subtrees: API_HOSTS
            .iter()
            .map(|h| GeneralSubtree::DnsName((*h).to_owned()))
            .collect(),
        excluded_subtrees: vec![],
    });
    p
}

fn serial(bytes: [u8; 16]) -> SerialNumber {
    // A positive DER integer: clear the top bit.
    let mut b = bytes;
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

impl LocalCa {
    /// A new authority valid from `now` (wall-clock time: clients check certificates against their own clocks,
    /// never against emulator time). Returns it with its stored form.
    pub(crate) fn generate(
        now: OffsetDateTime,
        id: [u8; 16],
    ) -> Result<(LocalCa, String), TlsError> {
        let common_name = format!(
            "vipps-emulator local CA {}",
            crate::platform::ids::hex(&id[..4])
        );
        // Keys come from the operating system's CSPRNG (through ring), never from the injected id generator,
        // which may be seeded.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params(&common_name);
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_LIFETIME;
        params.serial_number = Some(serial(id));
        let cert = params.self_signed(&key)?;
        let stored = StoredCa {
            common_name: common_name.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after_unix: params.not_after.unix_timestamp(),
        };
        let json = serde_json::to_string(&stored).map_err(|e| TlsError::Stored(e.to_string()))?;
        let ca = LocalCa {
            common_name: common_name.clone(),
            cert_pem: stored.cert_pem,
            not_after: params.not_after,
            issuer: Issuer::new(ca_params(&common_name), key),
        };
        Ok((ca, json))
    }

    /// The authority from its stored form.
    pub(crate) fn from_stored(json: &str) -> Result<LocalCa, TlsError> {
        let s: StoredCa =
            serde_json::from_str(json).map_err(|e| TlsError::Stored(e.to_string()))?;
        let key = KeyPair::from_pem(&s.key_pem)?;
        let not_after = OffsetDateTime::from_unix_timestamp(s.not_after_unix)
            .map_err(|e| TlsError::Stored(e.to_string()))?;
        Ok(LocalCa {
            issuer: Issuer::new(ca_params(&s.common_name), key),
            common_name: s.common_name,
            cert_pem: s.cert_pem,
            not_after,
        })
    }

    /// Whether the authority should be replaced because it ends soon (or has ended) at `now`.
    pub(crate) fn expires_soon(&self, now: OffsetDateTime) -> bool {
        self.not_after - CA_RENEW_BEFORE <= now
    }

    /// The authority's certificate, PEM-encoded: what clients are told to trust.
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a server certificate for `host`, valid from `now`.
    fn issue(
        &self,
        host: &str,
        now: OffsetDateTime,
        id: [u8; 16],
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<CertifiedKey, TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut p = CertificateParams::new(vec![host.to_owned()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        p.distinguished_name = dn;
        // Strict verifiers (Python 3.13's default context) demand the authority key identifier.
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = now - BACKDATE;
        p.not_after = (now + LEAF_LIFETIME).min(self.not_after);
        p.serial_number = Some(serial(id));
        let cert = p.signed_by(&key, &self.issuer)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = provider.key_provider.load_private_key(der)?;
        Ok(CertifiedKey::new(
            vec![CertificateDer::from(cert.der().to_vec())],
            signing,
        ))
    }

    /// The server configuration: a certificate for each API hostname, chosen by SNI; HTTP/2 and HTTP/1.1 by
    /// ALPN. `ids` gives the serial numbers.
    pub(crate) fn server_config(
        &self,
        now: OffsetDateTime,
        mut ids: impl FnMut() -> [u8; 16],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        // The same provider reqwest's rustls uses in this workspace: one crypto library, not two.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut by_name = ResolvesServerCertUsingSni::new();
        for host in API_HOSTS {
            by_name.add(host, self.issue(host, now, ids(), &provider)?)?;
        }
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(by_name));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Runs the server side of a TLS handshake on `io`, bounded by [`HANDSHAKE_TIMEOUT`]. `None` when it fails: the
/// client asked for another name (or none), does not trust the authority, or gave up. Only this connection is
/// affected; the reason is logged, with the name the client asked for.
pub(crate) async fn handshake<I>(
    config: &Arc<rustls::ServerConfig>,
    io: I,
) -> Option<(tokio_rustls::server::TlsStream<I>, ConnInfo)>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let attempt = async {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        let asked = start.client_hello().server_name().map(str::to_owned);
        let served = asked
            .as_deref()
            .is_some_and(|n| API_HOSTS.iter().any(|h| h.eq_ignore_ascii_case(n)));
        if !served {
            // The handshake below then fails with an alert (no certificate for that name); say why here, where
            // the operator looks.
            tracing::info!(
                server_name = asked.as_deref().unwrap_or("(none)"),
                "refusing a TLS handshake: this listener serves only {} and {}",
                API_HOSTS[0],
                API_HOSTS[1]
            );
        }
        let stream = start.into_stream(config.clone()).await?;
        Ok::<_, std::io::Error>((stream, asked))
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
        Ok(Ok((stream, asked))) => {
            let info = ConnInfo {
                tls_server_name: asked.map(Arc::from),
            };
            Some((stream, info))
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> impl FnMut() -> [u8; 16] {
        let mut n = 0u8;
        move || {
            n += 1;
            [n; 16]
        }
    }

    #[test]
    fn a_stored_authority_signs_like_the_one_that_was_generated() {
        let now = OffsetDateTime::now_utc();
        let (ca, json) = LocalCa::generate(now, [7; 16]).unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
        let again = LocalCa::from_stored(&json).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        assert!(!again.expires_soon(now));
        assert!(again.expires_soon(now + CA_LIFETIME));
        again.server_config(now, ids()).unwrap();
        assert!(matches!(
            LocalCa::from_stored("{}"),
            Err(TlsError::Stored(_))
        ));
    }
}
