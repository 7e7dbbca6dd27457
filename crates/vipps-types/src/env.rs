//! API environments: where a merchant sends its requests.

use url::Url;

/// The production API server.
pub const PRODUCTION_BASE_URL: &str = "https://api.vipps.no";
/// The test (MT) API server.
pub const TEST_BASE_URL: &str = "https://apitest.vipps.no";
/// The production API server's hostname.
pub const PRODUCTION_HOST: &str = "api.vipps.no";
/// The test API server's hostname.
pub const TEST_HOST: &str = "apitest.vipps.no";
/// Both API servers' hostnames, production first.
pub const API_HOSTS: [&str; 2] = [PRODUCTION_HOST, TEST_HOST];

/// Which API servers a merchant talks to.
///
/// ```
/// use vipps_types::env::Environment;
///
/// assert_eq!(Environment::Test.base_url().as_str(), "https://apitest.vipps.no/");
/// let local = Environment::custom("http://127.0.0.1:8080").unwrap();
/// assert_eq!(local.base_url().port(), Some(8080));
/// assert!(!local.is_production());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Environment {
    /// `https://api.vipps.no`: real money, production keys.
    Production,
    /// `https://apitest.vipps.no`: the test environment with test keys and the test app.
    Test,
    /// Any other base URL, such as a local emulator. Treated as a test environment.
    Custom(Url),
}

/// A base URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvironmentError {
    /// The text is not an absolute URL.
    #[error("base URL is not a valid absolute URL: {0}")]
    InvalidUrl(String),
    /// Only `http` and `https` are allowed.
    #[error("base URL must use http or https, not `{0}`")]
    UnsupportedScheme(String),
    /// A base URL cannot carry a query or fragment.
    #[error("base URL must not have a query or fragment")]
    QueryOrFragment,
}

impl Environment {
    /// A custom environment from a base URL such as `http://127.0.0.1:8080`.
    pub fn custom(base: &str) -> Result<Self, EnvironmentError> {
        let url = Url::parse(base).map_err(|e| EnvironmentError::InvalidUrl(e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(EnvironmentError::UnsupportedScheme(url.scheme().to_owned()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(EnvironmentError::QueryOrFragment);
        }
        Ok(Environment::Custom(url))
    }

    /// The base URL, always ending in `/` so that relative paths join below it.
    pub fn base_url(&self) -> Url {
        let mut url = match self {
            Environment::Production => Url::parse(PRODUCTION_BASE_URL).expect("constant URL"),
            Environment::Test => Url::parse(TEST_BASE_URL).expect("constant URL"),
            Environment::Custom(u) => u.clone(),
        };
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        url
    }

    /// The vendor environment a request names by its host (`api.vipps.no` or `apitest.vipps.no`, in any case,
    /// with or without a port or a trailing dot); `None` for every other host.
    ///
    /// ```
    /// use vipps_types::env::Environment;
    ///
    /// assert_eq!(Environment::from_api_host("apitest.vipps.no:443"), Some(Environment::Test));
    /// assert_eq!(Environment::from_api_host("API.vipps.no."), Some(Environment::Production));
    /// assert_eq!(Environment::from_api_host("127.0.0.1:8080"), None);
    /// ```
    pub fn from_api_host(host: &str) -> Option<Environment> {
        // A bracketed IPv6 literal has colons of its own and is never a vendor host.
        let name = match host.rsplit_once(':') {
            Some((name, port))
                if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => host,
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.eq_ignore_ascii_case(PRODUCTION_HOST) {
            Some(Environment::Production)
        } else if name.eq_ignore_ascii_case(TEST_HOST) {
            Some(Environment::Test)
        } else {
            None
        }
    }

    /// Whether this is the production environment, where force approve and test amounts do not exist.
    pub fn is_production(&self) -> bool {
        matches!(self, Environment::Production)
    }
}
