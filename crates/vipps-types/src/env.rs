//! API environments: where a merchant sends its requests.

use url::Url;

/// The production API server.
pub const PRODUCTION_BASE_URL: &str = "https://api.vipps.no";
/// The test (MT) API server.
pub const TEST_BASE_URL: &str = "https://apitest.vipps.no";

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

    /// Whether this is the production environment, where force approve and test amounts do not exist.
    pub fn is_production(&self) -> bool {
        matches!(self, Environment::Production)
    }
}
