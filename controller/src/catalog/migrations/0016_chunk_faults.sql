-- A chunk a read found missing, corrupt or unreadable (a pack not found, a data key not
-- loaded yet): why, and since when. Its row stays: a failed read never erases a record.
-- Restores and drills refuse what needs it, dedup does not offer it, and a later good read
-- or a new upload of the same content clears it.
ALTER TABLE chunks ADD COLUMN fault TEXT NOT NULL DEFAULT '';
