//! Which store this catalog indexes (see `repo::identity`).

use sqlx::Row;

use super::{Catalog, Result, now};

impl Catalog {
    /// The id of the store this catalog indexes, once recorded.
    pub async fn store_id(&self) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT store_id FROM store_identity")
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.get(0)))
    }

    /// Record `id` as this catalog's store unless one is recorded already; the recorded one
    /// either way (two controllers sharing a catalog may race here: the first wins).
    pub async fn record_store_id(&self, id: &str) -> Result<String> {
        let mut tx = self.write_tx().await?;
        let recorded: Option<String> = sqlx::query("SELECT store_id FROM store_identity")
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get(0));
        if let Some(r) = recorded {
            return Ok(r);
        }
        sqlx::query("INSERT INTO store_identity (store_id, recorded_at) VALUES ($1, $2)")
            .bind(id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id.to_string())
    }

    /// Does the catalog know any stored chunk? (A catalog that does expects a store with
    /// data in it.)
    pub async fn knows_stored_chunks(&self) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM chunks LIMIT 1")
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }
}
