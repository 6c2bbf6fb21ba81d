-- When each stored API key was last used: see the SQLite migration of the same number.
ALTER TABLE api_keys ADD COLUMN last_used timestamptz;
