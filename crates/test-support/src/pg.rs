//! A fresh PostgreSQL database per test on the server named by `VIPPS_TEST_POSTGRES_URL`, dropped (with its
//! connections) when the test ends. Without the variable a test skips with a printed reason; with `CI` set it fails
//! instead, so CI never passes without having run them.

/// The PostgreSQL server for tests (`VIPPS_TEST_POSTGRES_URL`), or `None` with a printed reason when it is not set.
/// With `CI` set, a missing URL fails the test instead.
pub fn pg_admin_url() -> Option<String> {
    match std::env::var("VIPPS_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but VIPPS_TEST_POSTGRES_URL is not: the PostgreSQL tests must run on CI"
            );
            eprintln!(
                "skipping a PostgreSQL test: set VIPPS_TEST_POSTGRES_URL (such as postgres://postgres@127.0.0.1:5432/postgres) to run it"
            );
            None
        }
    }
}

/// A fresh PostgreSQL database for one test, dropped (with its connections) when this is dropped.
pub struct PgDb {
    /// The database's URL.
    pub url: String,
    admin: String,
    name: String,
}

impl PgDb {
    /// Creates a database on the test server; `None` (skip) when no server is configured. An unreachable server
    /// fails the test.
    pub async fn create() -> Option<PgDb> {
        let admin = pg_admin_url()?;
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!("VIPPS_TEST_POSTGRES_URL is set but PostgreSQL is unreachable: {e}")
            });
        tokio::spawn(conn);
        let name = format!("vipps_test_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let mut url = url::Url::parse(&admin).expect("a URL");
        url.set_path(&format!("/{name}"));
        Some(PgDb {
            url: url.to_string(),
            admin,
            name,
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
