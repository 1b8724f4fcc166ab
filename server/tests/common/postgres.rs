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
    let admin = url.clone();
    let create = format!("CREATE DATABASE {name}");
    // Its own thread and runtime: callable from a test on a runtime or not.
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client.batch_execute(&create).await.unwrap();
            });
    })
    .join()
    .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}

/// A pool on `url`, migrated, as a node opens it.
pub fn connect(url: &str) -> scr_server::pg::Pg {
    scr_server::pg::Pg::connect(&scr_server::pg::PgConfig::new(url)).unwrap()
}
