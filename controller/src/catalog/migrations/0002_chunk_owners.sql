-- Which agents have uploaded a chunk's bytes. An agent may ask about, and refer to, only
-- chunks it uploaded itself: a chunk id is a content hash, and knowing one must not let an
-- agent learn that another host holds that content, or read it.
CREATE TABLE chunk_owners (
    chunk_id BLOB NOT NULL,
    agent    TEXT NOT NULL,
    PRIMARY KEY (chunk_id, agent)
);
