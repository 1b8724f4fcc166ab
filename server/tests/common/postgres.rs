//! The test cluster `scripts/with-postgres` starts (`scripts/test` runs the
//! suite inside it): a fresh database on it for each test.
#![allow(clippy::unwrap_used, dead_code)]

/// A new, empty database on the test cluster (its URL), or `None` when
/// `SCR_SKIP_POSTGRES=1` (said on stderr). Without either, the test fails:
/// PostgreSQL's tests are not skipped silently.
pub fn fresh_database() -> Option<String> {
    let Ok(url) = std::env::var("SCR_TEST_POSTGRES") else {
        if std::env::var("SCR_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("PostgreSQL test skipped: SCR_SKIP_POSTGRES=1");
            return None;
        }
        panic!(
            "this test needs PostgreSQL: run it through scripts/with-postgres \
             (scripts/test does), or set SCR_SKIP_POSTGRES=1 to skip it"
        );
    };
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).unwrap();
    let name: String = std::iter::once("scr_test_".to_owned())
        .chain(raw.iter().map(|b| format!("{b:02x}")))
        .collect();
    admin(&url, &format!("CREATE DATABASE {name}"));
    let (base, _) = url.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}

/// Runs `sql` on the cluster at `url` as its superuser, on a thread and
/// runtime of its own (callable from a test on a runtime or not).
pub fn admin(url: &str, sql: &str) {
    let sql = sql.to_owned();
    on_cluster(url, |client| async move {
        client.batch_execute(&sql).await.unwrap();
    });
}

/// Every value the query returns (one `bytea` column), concatenated: what
/// an attacker reading the database would see.
pub fn bytes_of(url: &str, sql: &str) -> Vec<u8> {
    let sql = sql.to_owned();
    on_cluster(url, |client| async move {
        client
            .query(&sql, &[])
            .await
            .unwrap()
            .iter()
            .flat_map(|r| r.get::<_, Vec<u8>>(0))
            .collect()
    })
}

/// `work` with a plain connection to `url`, on a thread and runtime of its
/// own.
fn on_cluster<T, F>(url: &str, work: impl FnOnce(tokio_postgres::Client) -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    let url = url.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                work(client).await
            })
    })
    .join()
    .unwrap()
}

/// A pool on `url`, migrated, as a node opens it.
pub fn connect(url: &str) -> scr_server::pg::Pg {
    scr_server::pg::Pg::connect(&scr_server::pg::PgConfig::new(url)).unwrap()
}
