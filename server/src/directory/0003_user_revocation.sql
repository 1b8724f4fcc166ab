-- A user whose access is withdrawn (left the organisation, a lost card):
-- no more logins, and every device still holding their grant wipes itself.
ALTER TABLE users ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0;
