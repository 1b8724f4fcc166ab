//! How the server opens its own SQLite files (the directory, the audit
//! archive): WAL, `synchronous=FULL` (what they record must survive a power
//! cut: a revocation, a used token, an acknowledged audit event), a busy
//! timeout for the admin commands that share them, and numbered migrations
//! applied in order, each in its own transaction.

use std::path::Path;

use rusqlite::Connection;

pub fn open_durable(path: &Path, migrations: &[&str]) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in migrations.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(conn)
}
