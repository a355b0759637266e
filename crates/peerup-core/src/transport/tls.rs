//! The libp2p TLS 1.3 handshake (`/tls/1.0.0`) with AES-GCM preferred.
//!
//! rust-libp2p's TLS upgrade lists ChaCha20-Poly1305 first and offers no way to change it, so two
//! libp2p peers always settle on ChaCha20, which on CPUs with AES instructions is markedly slower
//! (see `shared/reference/libp2p-ceiling.md`: about 0.31 instead of 0.22 of raw TCP through yamux).
//! This upgrade is the same protocol, with the same certificates (libp2p's own
//! [`libp2p::tls::certificate`] builds and checks them), and lists AES-128-GCM, then AES-256-GCM,
//! then ChaCha20. As a server it applies its own order even when the client prefers ChaCha20,
//! so a stock peer (Go, js, rust-libp2p) that offers AES at all gets AES; one that offers only
//! ChaCha20 still connects.
//!
//! Other protocols can run the same handshake with the same certificate under an ALPN of their
//! own ([`Config::for_alpn`]), so that neither kind of handshake passes for the other.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use futures_rustls::TlsStream;
use libp2p::PeerId;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::identity::Keypair;
use libp2p::tls::certificate;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs::cipher_suite::{
    TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CommonState, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// ALPN of libp2p's TLS handshake.
const ALPN: &[u8] = b"libp2p";

/// Setting up or running the handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate could not be made.
    #[error("cannot create the TLS certificate: {0}")]
    Certificate(#[from] certificate::GenError),
    /// rustls refused the configuration or the handshake.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The handshake failed on the wire.
    #[error("TLS handshake failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer's certificate is not a valid libp2p certificate.
    #[error("invalid peer certificate: {0}")]
    BadCertificate(String),
}

/// The upgrade, usable in `SwarmBuilder::with_tcp` like `libp2p::tls::Config::new`.
#[derive(Clone)]
pub struct Config {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

/// The same handshake under another ALPN, as rustls configurations, for a protocol that runs it
/// itself ([`Config::for_alpn`]).
#[derive(Clone)]
pub(crate) struct AlpnConfig {
    /// The client side.
    pub(crate) client: Arc<rustls::ClientConfig>,
    /// The server side.
    pub(crate) server: Arc<rustls::ServerConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites =
        vec![TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256];
    Arc::new(p)
}

impl Config {
    /// Builds client and server configurations for `identity`.
    pub fn new(identity: &Keypair) -> Result<Self, TlsError> {
        let (cert, key) = certificate::generate(identity)?;
        let provider = provider();
        // rustls' own "single cert" helpers parse the certificate and reject libp2p's critical
        // extension, so the certified key is handed over through a resolver instead.
        let signer = provider.key_provider.load_private_key(key)?;
        let certified =
            Arc::new(OwnCert(Arc::new(rustls::sign::CertifiedKey::new(vec![cert], signer))));
        let verifier = Arc::new(Verifier);
        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_cert_resolver(certified.clone());
        client.alpn_protocols = vec![ALPN.to_vec()];
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(certified);
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.ignore_client_order = true;
        // libp2p never resumes sessions: no tickets.
        server.send_tls13_tickets = 0;
        Ok(Self { client: Arc::new(client), server: Arc::new(server) })
    }

    /// The same certificate and ciphers with `alpn` in place of libp2p's, for a protocol of
    /// its own whose handshakes must not pass for a libp2p connection's (nor the other way
    /// round). Secret extraction is on: such a protocol may take the keys over after the
    /// handshake.
    pub(crate) fn for_alpn(&self, alpn: &[u8]) -> AlpnConfig {
        let mut client = (*self.client).clone();
        client.alpn_protocols = vec![alpn.to_vec()];
        client.enable_secret_extraction = true;
        let mut server = (*self.server).clone();
        server.alpn_protocols = vec![alpn.to_vec()];
        server.enable_secret_extraction = true;
        AlpnConfig { client: Arc::new(client), server: Arc::new(server) }
    }
}

impl Config {
    /// The client side's rustls configuration for the swarm's connections.
    #[cfg(test)]
    pub(crate) fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// The server side's rustls configuration for the swarm's connections.
    #[cfg(test)]
    pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }
}

/// The protocol name of the handshake.
pub const PROTOCOL: &str = crate::protocols::TLS;

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL)
    }
}

/// The server name a client hands rustls: the libp2p TLS spec forbids SNI, and an IP address
/// as the name disables it (peers are identified by their certificates alone).
pub(crate) fn no_sni() -> ServerName<'static> {
    ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into())
}

/// The peer ID in the single certificate the remote presented.
pub(crate) fn remote_peer(state: &CommonState) -> Result<PeerId, TlsError> {
    match state.peer_certificates() {
        Some([cert]) => certificate::parse(cert)
            .map(|c| c.peer_id())
            .map_err(|e| TlsError::BadCertificate(format!("{e:?}"))),
        _ => Err(TlsError::BadCertificate("expected exactly one certificate".into())),
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, TlsStream<C>);
    type Error = TlsError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, _: Self::Info) -> Self::Future {
        async move {
            let stream = futures_rustls::TlsAcceptor::from(self.server).accept(socket).await?;
            let peer = remote_peer(stream.get_ref().1)?;
            Ok((peer, stream.into()))
        }
        .boxed()
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, TlsStream<C>);
    type Error = TlsError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, _: Self::Info) -> Self::Future {
        async move {
            let stream =
                futures_rustls::TlsConnector::from(self.client).connect(no_sni(), socket).await?;
            let peer = remote_peer(stream.get_ref().1)?;
            Ok((peer, stream.into()))
        }
        .boxed()
    }
}

/// Presents our one certificate, as client and as server.
#[derive(Debug)]
struct OwnCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for OwnCert {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for OwnCert {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Accepts exactly one self-signed certificate carrying a valid libp2p extension; the peer ID it
/// names is checked by the swarm against the one dialled.
#[derive(Debug)]
struct Verifier;

fn check_cert(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<(), rustls::Error> {
    if !intermediates.is_empty() {
        return Err(rustls::Error::General("libp2p TLS takes exactly one certificate".into()));
    }
    certificate::parse(end_entity)?;
    Ok(())
}

fn check_signature(
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    message: &[u8],
) -> Result<HandshakeSignatureValid, rustls::Error> {
    certificate::parse(cert)?.verify_signature(dss.scheme, message, dss.signature())?;
    Ok(HandshakeSignatureValid::assertion())
}

fn schemes() -> Vec<SignatureScheme> {
    vec![
        SignatureScheme::ECDSA_NISTP384_SHA384,
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::ED25519,
        SignatureScheme::RSA_PSS_SHA512,
        SignatureScheme::RSA_PSS_SHA384,
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA512,
        SignatureScheme::RSA_PKCS1_SHA384,
        SignatureScheme::RSA_PKCS1_SHA256,
    ]
}

fn no_tls12() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic)
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_cert(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(cert, dss, message)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}

impl ClientCertVerifier for Verifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_cert(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(cert, dss, message)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}

/// The cipher suite a TLS stream negotiated, for tests and diagnostics.
pub fn negotiated_suite<C>(stream: &TlsStream<C>) -> Option<rustls::CipherSuite> {
    let state: &CommonState = match stream {
        TlsStream::Client(s) => s.get_ref().1,
        TlsStream::Server(s) => s.get_ref().1,
    };
    state.negotiated_cipher_suite().map(|s| s.suite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt, AsyncWriteExt};

    /// Runs our upgrade as client against `server` over an in-memory pipe.
    async fn handshake<S>(
        server: S,
        client_is_ours: bool,
    ) -> (PeerId, PeerId, Option<rustls::CipherSuite>)
    where
        S: InboundConnectionUpgrade<
                tokio_util::compat::Compat<tokio::io::DuplexStream>,
                Output = (PeerId, TlsStream<tokio_util::compat::Compat<tokio::io::DuplexStream>>),
            > + Send
            + 'static,
        S::Error: std::fmt::Debug,
        S::Future: Send,
        S::Info: Send,
        S: UpgradeInfo,
    {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client_key = Keypair::generate_ed25519();
        let client_id = client_key.public().to_peer_id();
        let info = server.protocol_info().into_iter().next().unwrap();
        let srv =
            tokio::spawn(async move { server.upgrade_inbound(b.compat(), info).await.unwrap() });
        let (seen_server, mut stream) = if client_is_ours {
            Config::new(&client_key)
                .unwrap()
                .upgrade_outbound(a.compat(), "/tls/1.0.0")
                .await
                .unwrap()
        } else {
            libp2p::tls::Config::new(&client_key)
                .unwrap()
                .upgrade_outbound(a.compat(), "/tls/1.0.0")
                .await
                .unwrap()
        };
        let (seen_client, mut sstream) = srv.await.unwrap();
        let suite = negotiated_suite(&stream);
        stream.write_all(b"hi").await.unwrap();
        stream.flush().await.unwrap();
        let mut buf = [0u8; 2];
        sstream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        assert_eq!(seen_client, client_id);
        (seen_server, seen_client, suite)
    }

    #[tokio::test]
    async fn prefers_aes_and_interoperates_with_stock_libp2p_tls() {
        let server_key = Keypair::generate_ed25519();
        let server_id = server_key.public().to_peer_id();
        // Ours to ours: AES-128-GCM.
        let (seen, _, suite) = handshake(Config::new(&server_key).unwrap(), true).await;
        assert_eq!(seen, server_id);
        assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
        // A stock libp2p client (ChaCha20 first) against our server: our order wins.
        let (seen, _, suite) = handshake(Config::new(&server_key).unwrap(), false).await;
        assert_eq!(seen, server_id);
        assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
        // Our client against a stock libp2p server: it follows our (client) order too.
        let stock = libp2p::tls::Config::new(&server_key).unwrap();
        let (seen, _, suite) = handshake(stock, true).await;
        assert_eq!(seen, server_id);
        assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    }
}
