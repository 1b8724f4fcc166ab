-- Failed logins, counted per (user, device): a device that guesses locks
-- that user out of that device only, never out of their other devices.
-- A patient's phone counts under user id "patient". (users.failed_logins
-- is no longer read.)
CREATE TABLE login_attempts (
    user_id TEXT NOT NULL,
    device  BLOB NOT NULL,
    failed  INTEGER NOT NULL,
    PRIMARY KEY (user_id, device)
) STRICT, WITHOUT ROWID;
