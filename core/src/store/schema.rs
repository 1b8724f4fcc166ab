//! Numbered migrations, applied in order inside one transaction each;
//! `PRAGMA user_version` records the last one applied.

use rusqlite::Connection;

use super::StoreError;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_audit_and_holdings.sql"),
    include_str!("migrations/0003_quarantine.sql"),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Each step reads the version inside its own write transaction, so two
/// handles opening one new file at once (a server and an admin command)
/// apply each migration once.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if current > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                found: current,
                known: SCHEMA_VERSION,
            });
        }
        let Some(sql) = MIGRATIONS.get(current.max(0) as usize) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", current.max(0) + 1)?;
        tx.commit()?;
    }
}
