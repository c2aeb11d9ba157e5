-- The store this catalog indexes: the id in the store's identity object, recorded when the
-- two first met. A controller whose store lacks it, or holds another, refuses to start.
CREATE TABLE store_identity (
    store_id TEXT PRIMARY KEY,
    recorded_at BIGINT NOT NULL
);
