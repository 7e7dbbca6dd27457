//! The request servers that Vipps calls merchants from (webhooks and callbacks).
//!
//! Their addresses are published only through DNS and change without warning, so merchants allow them by
//! hostname and keep firewall rules in step with DNS.

use std::fmt;

/// The domain every request server lives under.
pub const DOMAIN: &str = "vipps.no";

/// A pool of request servers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Pool {
    /// `callback-1..4.vipps.no`.
    Production,
    /// `callback-dr-1..4.vipps.no`, the disaster-recovery set that production fails over to.
    DisasterRecovery,
    /// `callback-mt-1..2.vipps.no`, the test (MT) environment.
    Test,
}

impl Pool {
    /// All pools.
    pub const ALL: [Pool; 3] = [Pool::Production, Pool::DisasterRecovery, Pool::Test];

    /// The hostnames of this pool, in order.
    ///
    /// ```
    /// use vipps_types::servers::Pool;
    /// assert_eq!(Pool::Test.hostnames(), vec!["callback-mt-1.vipps.no", "callback-mt-2.vipps.no"]);
    /// assert_eq!(Pool::DisasterRecovery.hostnames()[3], "callback-dr-4.vipps.no");
    /// ```
    pub fn hostnames(self) -> Vec<String> {
        let (prefix, n) = match self {
            Pool::Production => ("callback-", 4),
            Pool::DisasterRecovery => ("callback-dr-", 4),
            Pool::Test => ("callback-mt-", 2),
        };
        (1..=n).map(|i| format!("{prefix}{i}.{DOMAIN}")).collect()
    }

    /// A short stable name: `production`, `disaster-recovery` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Pool::Production => "production",
            Pool::DisasterRecovery => "disaster-recovery",
            Pool::Test => "test",
        }
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which request servers a merchant must admit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// Production always includes disaster recovery: `callback-1..4` and `callback-dr-1..4`.
    Production,
    /// The test environment: `callback-mt-1..2`.
    Test,
    /// Any explicit list of hostnames.
    Custom(Vec<String>),
}

/// A profile name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown request-server profile `{0}` (expected `production` or `test`)")]
pub struct UnknownProfile(pub String);

impl Profile {
    /// The hostnames of the profile, in a stable order.
    ///
    /// ```
    /// use vipps_types::servers::Profile;
    /// let names = Profile::Production.hostnames();
    /// assert_eq!(names.len(), 8);
    /// assert!(names.contains(&"callback-dr-1.vipps.no".to_string()));
    /// ```
    pub fn hostnames(&self) -> Vec<String> {
        match self {
            Profile::Production => {
                let mut v = Pool::Production.hostnames();
                v.extend(Pool::DisasterRecovery.hostnames());
                v
            }
            Profile::Test => Pool::Test.hostnames(),
            Profile::Custom(names) => names.clone(),
        }
    }

    /// The pools a named profile covers (empty for a custom list).
    pub fn pools(&self) -> Vec<Pool> {
        match self {
            Profile::Production => vec![Pool::Production, Pool::DisasterRecovery],
            Profile::Test => vec![Pool::Test],
            Profile::Custom(_) => vec![],
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = UnknownProfile;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "production" | "prod" => Ok(Profile::Production),
            "test" | "mt" => Ok(Profile::Test),
            other => Err(UnknownProfile(other.to_owned())),
        }
    }
}

/// Every request-server hostname of every pool.
pub fn all_hostnames() -> Vec<String> {
    Pool::ALL.iter().flat_map(|p| p.hostnames()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_matches_vendor_page() {
        assert_eq!(
            Pool::Production.hostnames(),
            [
                "callback-1.vipps.no",
                "callback-2.vipps.no",
                "callback-3.vipps.no",
                "callback-4.vipps.no"
            ]
        );
        assert_eq!(all_hostnames().len(), 10);
        assert_eq!(Profile::Test.hostnames().len(), 2);
        assert_eq!("production".parse::<Profile>().unwrap().pools().len(), 2);
        assert!("staging".parse::<Profile>().is_err());
    }
}
