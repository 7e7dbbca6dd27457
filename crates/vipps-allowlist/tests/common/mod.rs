//! Test DNS servers on 127.0.0.1: an in-process hickory-server zone whose answers can be swapped, and dnsmasq
//! as an independent implementation.
#![allow(dead_code, missing_docs, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

/// A zone for `vipps.no.` that answers from a swappable catalog, with an optional delay per query.
pub struct SwapHandler {
    catalog: ArcSwap<Catalog>,
    delay_ms: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl RequestHandler for SwapHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let delay = self.delay_ms.load(std::sync::atomic::Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let catalog = self.catalog.load_full();
        catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// `(hostname, address, ttl)`.
pub type Rec<'a> = (&'a str, &'a str, u32);

fn catalog(records: &[Rec<'_>]) -> Catalog {
    let origin = Name::from_ascii("vipps.no.").unwrap();
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let soa = SOA::new(
        Name::from_ascii("ns.vipps.no.").unwrap(),
        Name::from_ascii("hostmaster.vipps.no.").unwrap(),
        1,
        60,
        60,
        600,
        1,
    );
    zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1);
    for (name, ip, ttl) in records {
        let name = Name::from_ascii(format!("{name}.")).unwrap();
        let data = match ip.parse::<IpAddr>().unwrap() {
            IpAddr::V4(a) => RData::A(A(a)),
            IpAddr::V6(a) => RData::AAAA(AAAA(a)),
        };
        zone.upsert_mut(Record::from_rdata(name, *ttl, data), 1);
    }
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::from(&origin), vec![Arc::new(zone)]);
    catalog
}

pub struct TestDns {
    pub addr: SocketAddr,
    handler: Arc<SwapHandler>,
    server: Server<ArcHandler>,
}

/// `Server` takes the handler by value; this shares it with the test.
pub struct ArcHandler(Arc<SwapHandler>);

#[async_trait::async_trait]
impl RequestHandler for ArcHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.0
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

impl TestDns {
    pub async fn start(records: &[Rec<'_>]) -> TestDns {
        let handler = Arc::new(SwapHandler {
            catalog: ArcSwap::from_pointee(catalog(records)),
            delay_ms: 0.into(),
        });
        let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let mut server = Server::new(ArcHandler(handler.clone()));
        server.register_socket(socket);
        TestDns {
            addr,
            handler,
            server,
        }
    }

    /// Replaces every answer.
    pub fn set(&self, records: &[Rec<'_>]) {
        self.handler.catalog.store(Arc::new(catalog(records)));
    }

    /// Delays every answer.
    pub fn set_delay(&self, delay: Duration) {
        self.handler.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Stops answering.
    pub async fn shutdown(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

/// A free UDP port on 127.0.0.1 (closed again; nothing listens there).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// dnsmasq as a child process serving an `--addn-hosts` file.
pub struct Dnsmasq {
    pub addr: SocketAddr,
    pub hosts: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

fn find(bin: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|d| PathBuf::from(d).join(bin))
    .find(|p| p.exists())
}

impl Dnsmasq {
    /// Starts dnsmasq, or returns `None` (with the reason on stderr) when it is not installed outside CI.
    pub fn start(hosts: &str, ttl: u32) -> Option<Dnsmasq> {
        let Some(bin) = find("dnsmasq") else {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!(
                    "dnsmasq is not installed, and CI must run this test (apt-get install -y dnsmasq)"
                );
            }
            eprintln!(
                "SKIPPED: dnsmasq is not installed (apt-get install -y dnsmasq); skipping the dnsmasq test"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, hosts).unwrap();
        for _ in 0..5 {
            let port = free_udp_port();
            let child = Command::new(&bin)
                .args([
                    "--no-daemon",
                    "--keep-in-foreground",
                    &format!("--port={port}"),
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    "--local=/vipps.no/",
                    &format!("--local-ttl={ttl}"),
                    "--pid-file=",
                    "--user=root",
                    &format!("--addn-hosts={}", path.display()),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq starts");
            let mut d = Dnsmasq {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                hosts: path.clone(),
                child,
                _dir: tempfile::tempdir().unwrap(),
            };
            // Ready when the port is taken.
            for _ in 0..100 {
                if std::net::UdpSocket::bind(d.addr).is_err() {
                    d._dir = dir;
                    return Some(d);
                }
                if let Ok(Some(_)) = d.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
        panic!("dnsmasq did not start");
    }

    /// Rewrites the hosts file and makes dnsmasq re-read it (SIGHUP).
    pub fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "SIGHUP to dnsmasq");
        std::thread::sleep(Duration::from_millis(100));
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}
