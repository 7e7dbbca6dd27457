//! The embedded DNS server: answers A and AAAA for the request-server hostnames under `vipps.no` with their
//! current addresses and a short TTL, over UDP and TCP, and, when asked to, for the API hostnames with the
//! address of the emulator's HTTPS listener (fixed records that every update keeps). Built on hickory's server crate; answers are swapped in
//! atomically whenever the request servers change, so a change is visible at once.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

/// Answers from a catalog that can be replaced while serving.
pub(crate) struct ZoneAnswers {
    catalog: ArcSwap<Catalog>,
    /// Records that every update keeps (the API hostnames, when the DNS server answers them).
    fixed: Vec<(String, Vec<IpAddr>)>,
    ttl: u32,
    serial: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for ZoneAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneAnswers")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn name(s: &str) -> Name {
    Name::from_ascii(if s.ends_with('.') {
        s.to_owned()
    } else {
        format!("{s}.")
    })
    .expect("valid DNS name")
}

impl ZoneAnswers {
    /// Answers for `records` and the `fixed` records with `ttl` seconds.
    pub(crate) fn new(
        records: &[(String, Vec<IpAddr>)],
        fixed: Vec<(String, Vec<IpAddr>)>,
        ttl: u32,
    ) -> Self {
        let z = ZoneAnswers {
            catalog: ArcSwap::from_pointee(Catalog::new()),
            fixed,
            ttl,
            serial: std::sync::atomic::AtomicU32::new(1),
        };
        z.set(records);
        z
    }

    /// Replaces every answer but the fixed ones.
    pub(crate) fn set(&self, records: &[(String, Vec<IpAddr>)]) {
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let origin = name(vipps_types::servers::DOMAIN);
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let soa = SOA::new(
            name("ns.emulator.vipps.no"),
            name("hostmaster.emulator.vipps.no"),
            serial,
            60,
            60,
            600,
            self.ttl,
        );
        zone.upsert_mut(
            Record::from_rdata(origin.clone(), self.ttl, RData::SOA(soa)),
            serial,
        );
        zone.upsert_mut(
            Record::from_rdata(
                origin.clone(),
                self.ttl,
                RData::NS(NS(name("ns.emulator.vipps.no"))),
            ),
            serial,
        );
        for (host, addrs) in records.iter().chain(&self.fixed) {
            for ip in addrs {
                let data = match ip {
                    IpAddr::V4(a) => RData::A(A(*a)),
                    IpAddr::V6(a) => RData::AAAA(AAAA(*a)),
                };
                zone.upsert_mut(Record::from_rdata(name(host), self.ttl, data), serial);
            }
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::from(&origin), vec![Arc::new(zone)]);
        self.catalog.store(Arc::new(catalog));
    }
}

/// The request handler given to hickory's server.
#[derive(Debug, Clone)]
pub(crate) struct Handler(pub Arc<ZoneAnswers>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        let catalog = self.0.catalog.load_full();
        catalog.handle_request::<R, T>(request, response).await
    }
}

/// A running DNS server.
pub(crate) struct DnsServer {
    /// The bound address (UDP and TCP share it).
    pub addr: SocketAddr,
    server: Server<Handler>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0 picks a port free for both).
    pub(crate) async fn start(
        addr: SocketAddr,
        answers: Arc<ZoneAnswers>,
    ) -> std::io::Result<DnsServer> {
        let mut tries = 0;
        loop {
            let udp = tokio::net::UdpSocket::bind(addr).await?;
            let bound = udp.local_addr()?;
            match tokio::net::TcpListener::bind(bound).await {
                Ok(tcp) => {
                    let mut server = Server::new(Handler(answers));
                    server.register_socket(udp);
                    server.register_listener(tcp, Duration::from_secs(5), 64);
                    return Ok(DnsServer {
                        addr: bound,
                        server,
                    });
                }
                Err(e) if addr.port() == 0 && tries < 20 => {
                    tries += 1;
                    tracing::debug!(error = %e, "TCP port taken; trying another");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stops answering.
    pub(crate) async fn shutdown(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}
