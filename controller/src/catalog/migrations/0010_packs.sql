-- Chunks stored inside pack objects, and where: the pack's name, the offset and length of the
-- chunk's stored bytes in it. pack is NULL for a chunk stored as its own object (before packs).
ALTER TABLE chunks ADD COLUMN pack TEXT;
ALTER TABLE chunks ADD COLUMN pack_offset INTEGER;
ALTER TABLE chunks ADD COLUMN pack_len INTEGER;
CREATE INDEX chunks_pack ON chunks (pack);
