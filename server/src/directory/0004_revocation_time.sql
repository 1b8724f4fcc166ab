-- When a device or a user was revoked: an uploaded audit event dated after
-- it is not believed (the remote wipe's own forgetting aside). Those
-- revoked before this column existed count from now.
ALTER TABLE devices ADD COLUMN revoked_at_ms INTEGER;
ALTER TABLE users ADD COLUMN revoked_at_ms INTEGER;
UPDATE devices SET revoked_at_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000 WHERE revoked != 0;
UPDATE users SET revoked_at_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000 WHERE revoked != 0;
