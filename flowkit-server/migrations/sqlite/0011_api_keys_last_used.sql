-- When each stored API key was last used (conventions as in 0001; the PostgreSQL migration of
-- the same number holds the same logical schema). Written at most once a minute per key
-- (`crate::key_ring`), never once per request; NULL until the key is first used.
ALTER TABLE api_keys ADD COLUMN last_used INTEGER;
