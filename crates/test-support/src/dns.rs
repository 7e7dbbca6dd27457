//! DNS servers on 127.0.0.1: an in-process hickory zone for `vipps.no.` and dnsmasq as an independent
//! implementation.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode};
pub use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};

use crate::tools;

/// `(hostname, address, ttl)`.
pub type Rec<'a> = (&'a str, &'a str, u32);

/// How the in-process server misbehaves for one record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers `REFUSED`.
    Refused,
    /// Answers `SERVFAIL`.
    ServFail,
    /// Never answers (the client times out).
    Silent,
}

struct SwapHandler {
    catalog: ArcSwap<Catalog>,
    delay_ms: AtomicU64,
    faults: Mutex<HashMap<RecordType, Fault>>,
}

impl SwapHandler {
    async fn handle<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let qtype = request.request_info().ok().map(|i| i.query.query_type());
        let fault = qtype.and_then(|t| self.faults.lock().expect("faults").get(&t).copied());
        let code = match fault {
            None => {
                let catalog = self.catalog.load_full();
                return catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await;
            }
            Some(Fault::Silent) => {
                let mut metadata = Metadata::new(
                    request.metadata.id,
                    MessageType::Response,
                    request.metadata.op_code,
                );
                metadata.response_code = ResponseCode::ServFail;
                return ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                });
            }
            Some(Fault::Refused) => ResponseCode::Refused,
            Some(Fault::ServFail) => ResponseCode::ServFail,
        };
        let response = MessageResponseBuilder::from_message_request(request)
            .error_msg(&request.metadata, code);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => {
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = code;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

fn catalog(records: &[Rec<'_>]) -> Catalog {
    let origin = Name::from_ascii("vipps.no.").expect("origin");
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let soa = SOA::new(
        Name::from_ascii("ns.vipps.no.").expect("ns"),
        Name::from_ascii("hostmaster.vipps.no.").expect("hostmaster"),
        1,
        60,
        60,
        600,
        1,
    );
    zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1);
    for (name, ip, ttl) in records {
        let name = Name::from_ascii(format!("{name}.")).expect("a DNS name");
        let data = match ip.parse::<IpAddr>().expect("an address") {
            IpAddr::V4(a) => RData::A(A(a)),
            IpAddr::V6(a) => RData::AAAA(AAAA(a)),
        };
        zone.upsert_mut(Record::from_rdata(name, *ttl, data), 1);
    }
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::from(&origin), vec![Arc::new(zone)]);
    catalog
}

/// `Server` takes the handler by value; this shares it with the test.
struct ArcHandler(Arc<SwapHandler>);

#[async_trait::async_trait]
impl RequestHandler for ArcHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.0.handle::<R, T>(request, response_handle).await
    }
}

/// An in-process authoritative server for `vipps.no.` on a UDP port of 127.0.0.1.
pub struct TestDns {
    /// Where it listens.
    pub addr: SocketAddr,
    handler: Arc<SwapHandler>,
    server: Server<ArcHandler>,
}

impl TestDns {
    /// Starts serving `records`.
    pub async fn start(records: &[Rec<'_>]) -> TestDns {
        let handler = Arc::new(SwapHandler {
            catalog: ArcSwap::from_pointee(catalog(records)),
            delay_ms: 0.into(),
            faults: Mutex::new(HashMap::new()),
        });
        let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind a UDP port");
        let addr = socket.local_addr().expect("local address");
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
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.handler.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Makes queries of `rtype` fail with `fault` (`None`: answer them again).
    pub fn set_fault(&self, rtype: RecordType, fault: Option<Fault>) {
        let mut faults = self.handler.faults.lock().expect("faults");
        match fault {
            Some(f) => faults.insert(rtype, f),
            None => faults.remove(&rtype),
        };
    }

    /// Stops answering.
    pub async fn shutdown(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

/// How dnsmasq treats names it has no record for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Authoritative for `vipps.no` (`--local=/vipps.no/`): a missing type is an empty answer (no data).
    Local,
    /// A resolver without upstream servers: what its hosts file cannot answer is `REFUSED` (a common setup: a
    /// hosts file with only IPv4 addresses refuses every `AAAA` query).
    RefuseUnknown,
}

/// dnsmasq as a child process serving an `--addn-hosts` file on a free port of 127.0.0.1; killed on drop.
pub struct Dnsmasq {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The hosts file it serves.
    pub hosts: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq authoritative for `vipps.no` ([`Mode::Local`]), or `None` (the reason printed) when it is
    /// not installed outside CI.
    pub fn start(hosts: &str, ttl: u32) -> Option<Dnsmasq> {
        Self::start_with(hosts, ttl, Mode::Local)
    }

    /// Starts dnsmasq in `mode`.
    pub fn start_with(hosts: &str, ttl: u32, mode: Mode) -> Option<Dnsmasq> {
        let bin = tools::tool("dnsmasq", "dnsmasq-base")?;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("hosts");
        std::fs::write(&path, hosts).expect("write the hosts file");
        for _ in 0..5 {
            let port = crate::free_udp_port();
            let mut cmd = Command::new(&bin);
            cmd.args([
                "--no-daemon",
                "--keep-in-foreground",
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                &format!("--local-ttl={ttl}"),
                "--pid-file=",
                "--user=root",
                &format!("--addn-hosts={}", path.display()),
            ]);
            if mode == Mode::Local {
                cmd.arg("--local=/vipps.no/");
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq starts");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            // Ready when the port is taken.
            for _ in 0..100 {
                if std::net::UdpSocket::bind(addr).is_err() {
                    return Some(Dnsmasq {
                        addr,
                        hosts: path,
                        child,
                        _dir: dir,
                    });
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start");
    }

    /// Rewrites the hosts file and makes dnsmasq re-read it (SIGHUP).
    pub fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).expect("write the hosts file");
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "SIGHUP to dnsmasq");
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Stops it (a process this harness started).
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
