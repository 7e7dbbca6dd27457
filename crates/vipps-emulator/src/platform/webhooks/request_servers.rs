//! The request servers that deliver webhooks: pools, addresses, the active server per environment, rotation and
//! failover. Pure state; the DNS server and the dispatcher read it, the control API changes it.
//!
//! By default every hostname has one loopback address: production `callback-N` at `127.0.1.N`, disaster recovery
//! `callback-dr-N` at `127.0.2.N`, test `callback-mt-N` at `127.0.3.N`. A rotation makes the next server of a
//! pool active and, like the vendor who "may change the IP addresses without warning", moves the newly active
//! server to a fresh address (`127.0.P.(N + 10·k)`) unless addresses were configured explicitly.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use vipps_types::servers::Pool;

/// The state of all pools (persisted as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RequestServers {
    /// Pools in the order production, disaster recovery, test.
    pub pools: Vec<PoolState>,
    /// Whether production traffic is served by the disaster-recovery pool.
    pub failover: bool,
    /// Emulator time of the last scheduled rotation (ms).
    pub last_rotation_ms: i64,
    /// Whether rotation moves the activated server to a fresh address.
    pub move_on_rotation: bool,
    /// Bumped on every change; instances sharing a store apply a stored state only when it is newer.
    #[serde(default)]
    pub version: u64,
}

/// One pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PoolState {
    /// Which pool.
    pub pool: Pool,
    /// Index of the active server.
    pub active: usize,
    /// The servers.
    pub servers: Vec<ServerState>,
}

/// One request server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServerState {
    /// Hostname, such as `callback-mt-1.vipps.no`.
    pub hostname: String,
    /// Current addresses (A and AAAA); the first is the source of deliveries.
    pub addresses: Vec<IpAddr>,
    /// How many times rotation moved this server to a fresh address.
    pub moves: u32,
}

fn pool_octet(p: Pool) -> u8 {
    match p {
        Pool::Production => 1,
        Pool::DisasterRecovery => 2,
        Pool::Test => 3,
    }
}

fn default_address(p: Pool, index: usize, moves: u32) -> IpAddr {
    let host = (index as u32 + 1 + 10 * (moves % 25)) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, pool_octet(p), host))
}

/// Which environment's active server a delivery leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Test merchants.
    Test,
    /// Production merchants (the production pool, or disaster recovery after failover).
    Production,
}

impl RequestServers {
    /// Default pools with loopback addresses, overridden per hostname by `addresses`.
    pub(crate) fn new(addresses: &std::collections::BTreeMap<String, Vec<IpAddr>>) -> Self {
        let pools = Pool::ALL
            .iter()
            .map(|&pool| PoolState {
                pool,
                active: 0,
                servers: pool
                    .hostnames()
                    .into_iter()
                    .enumerate()
                    .map(|(i, hostname)| ServerState {
                        addresses: addresses
                            .get(&hostname)
                            .cloned()
                            .unwrap_or_else(|| vec![default_address(pool, i, 0)]),
                        hostname,
                        moves: 0,
                    })
                    .collect(),
            })
            .collect();
        RequestServers {
            pools,
            failover: false,
            last_rotation_ms: 0,
            move_on_rotation: addresses.is_empty(),
            version: 0,
        }
    }

    /// A pool.
    pub(crate) fn pool(&self, p: Pool) -> &PoolState {
        self.pools
            .iter()
            .find(|s| s.pool == p)
            .expect("every pool exists")
    }

    fn pool_mut(&mut self, p: Pool) -> &mut PoolState {
        self.pools
            .iter_mut()
            .find(|s| s.pool == p)
            .expect("every pool exists")
    }

    /// The pool that serves a side now.
    pub(crate) fn serving_pool(&self, side: Side) -> Pool {
        match side {
            Side::Test => Pool::Test,
            Side::Production if self.failover => Pool::DisasterRecovery,
            Side::Production => Pool::Production,
        }
    }

    /// The active server of a side.
    pub(crate) fn active(&self, side: Side) -> &ServerState {
        let p = self.pool(self.serving_pool(side));
        &p.servers[p.active]
    }

    /// The address deliveries of a side leave from.
    pub(crate) fn source(&self, side: Side) -> IpAddr {
        self.active(side).addresses[0]
    }

    /// Makes the next server of a pool active (moving it to a fresh address when enabled).
    pub(crate) fn rotate(&mut self, p: Pool) {
        self.version += 1;
        let mv = self.move_on_rotation;
        let ps = self.pool_mut(p);
        ps.active = (ps.active + 1) % ps.servers.len();
        let i = ps.active;
        if mv {
            let s = &mut ps.servers[i];
            s.moves += 1;
            s.addresses = vec![default_address(p, i, s.moves)];
        }
    }

    /// Rotates every pool (the scheduled rotation).
    pub(crate) fn rotate_all(&mut self, now_ms: i64) {
        for p in Pool::ALL {
            self.rotate(p);
        }
        self.last_rotation_ms = now_ms;
    }

    /// Switches production traffic to disaster recovery (`true`) or back.
    pub(crate) fn set_failover(&mut self, on: bool) {
        self.version += 1;
        self.failover = on;
    }

    /// Every hostname with its addresses.
    pub(crate) fn records(&self) -> Vec<(String, Vec<IpAddr>)> {
        self.pools
            .iter()
            .flat_map(|p| {
                p.servers
                    .iter()
                    .map(|s| (s.hostname.clone(), s.addresses.clone()))
            })
            .collect()
    }

    /// The JSON view for `GET /_emulator/request-servers`.
    pub(crate) fn view(&self, rotation_period_ms: i64) -> serde_json::Value {
        let pool_view = |p: Pool| {
            let ps = self.pool(p);
            serde_json::json!({
                "active": ps.servers[ps.active].hostname,
                "servers": ps.servers.iter().enumerate().map(|(i, s)| serde_json::json!({
                    "hostname": s.hostname,
                    "addresses": s.addresses,
                    "active": i == ps.active,
                })).collect::<Vec<_>>(),
            })
        };
        serde_json::json!({
            "test": { "serving_pool": "test", "active": self.active(Side::Test).hostname, "source_address": self.source(Side::Test) },
            "production": {
                "serving_pool": self.serving_pool(Side::Production).as_str(),
                "failover": self.failover,
                "active": self.active(Side::Production).hostname,
                "source_address": self.source(Side::Production),
            },
            "pools": {
                "production": pool_view(Pool::Production),
                "disaster-recovery": pool_view(Pool::DisasterRecovery),
                "test": pool_view(Pool::Test),
            },
            "rotation": {
                "period_seconds": rotation_period_ms / 1000,
                "last_rotation_ms": self.last_rotation_ms,
                "next_rotation_ms": self.last_rotation_ms + rotation_period_ms,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_rotation_and_failover() {
        let mut rs = RequestServers::new(&Default::default());
        assert_eq!(rs.source(Side::Test).to_string(), "127.0.3.1");
        assert_eq!(rs.source(Side::Production).to_string(), "127.0.1.1");
        rs.rotate(Pool::Test);
        assert_eq!(rs.active(Side::Test).hostname, "callback-mt-2.vipps.no");
        assert_eq!(
            rs.source(Side::Test).to_string(),
            "127.0.3.12",
            "moved to a fresh address"
        );
        rs.rotate(Pool::Test);
        assert_eq!(rs.active(Side::Test).hostname, "callback-mt-1.vipps.no");
        rs.failover = true;
        assert_eq!(
            rs.active(Side::Production).hostname,
            "callback-dr-1.vipps.no"
        );
        assert_eq!(rs.source(Side::Production).to_string(), "127.0.2.1");
        assert_eq!(rs.records().len(), 10);
    }

    #[test]
    fn configured_addresses_stay_put() {
        let mut m = std::collections::BTreeMap::new();
        m.insert(
            "callback-mt-2.vipps.no".to_string(),
            vec!["127.0.9.9".parse().unwrap(), "::1".parse().unwrap()],
        );
        let mut rs = RequestServers::new(&m);
        rs.rotate(Pool::Test);
        assert_eq!(rs.source(Side::Test).to_string(), "127.0.9.9");
        assert_eq!(rs.active(Side::Test).addresses.len(), 2);
    }
}
