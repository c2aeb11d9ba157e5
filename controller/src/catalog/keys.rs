//! The catalog's side of encryption at rest: KEK fingerprints and wrapped data keys.

use sqlx::Row;

use super::{Catalog, DbConn, Result, now};

#[derive(Debug, Clone, PartialEq)]
pub struct KekRow {
    pub id: u32,
    pub fingerprint: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DataKeyRow {
    pub id: u32,
    pub kek_id: u32,
    pub wrapped: Vec<u8>,
}

/// What one rotation writes, all in one transaction.
pub struct Rotation {
    pub kek: KekRow,
    /// Every existing data key, wrapped again under the new KEK.
    pub rewrapped: Vec<DataKeyRow>,
    /// The data key new chunks are sealed with from now on.
    pub new_data_key: DataKeyRow,
}

impl Catalog {
    pub async fn keks(&self) -> Result<Vec<KekRow>> {
        Ok(
            sqlx::query("SELECT id, fingerprint, created_at, retired_at FROM keks ORDER BY id")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| KekRow {
                    id: r.get::<i64, _>(0) as u32,
                    fingerprint: r.get(1),
                    created_at: r.get(2),
                    retired_at: r.get(3),
                })
                .collect(),
        )
    }

    pub async fn data_keys(&self) -> Result<Vec<DataKeyRow>> {
        Ok(
            sqlx::query("SELECT id, kek_id, wrapped FROM data_keys ORDER BY id")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| DataKeyRow {
                    id: r.get::<i64, _>(0) as u32,
                    kek_id: r.get::<i64, _>(1) as u32,
                    wrapped: r.get(2),
                })
                .collect(),
        )
    }

    /// How many chunks the catalog holds as stored.
    pub async fn stored_chunk_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM chunks")
            .fetch_one(&self.pool)
            .await?
            .get(0);
        Ok(n as u64)
    }

    /// The first KEK and data key of a store, when encryption is turned on for it.
    pub async fn start_encryption(&self, kek: &KekRow, data_key: &DataKeyRow) -> Result<()> {
        let mut tx = self.write_tx().await?;
        insert_kek(&mut tx, kek).await?;
        insert_data_key(&mut tx, data_key).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record a new KEK, rewrap every data key under it, retire the others and add a new
    /// data key, atomically: a crash leaves either the old keys or the new ones.
    pub async fn rotate_keys(&self, r: &Rotation) -> Result<()> {
        let mut tx = self.write_tx().await?;
        insert_kek(&mut tx, &r.kek).await?;
        for dk in &r.rewrapped {
            sqlx::query("UPDATE data_keys SET kek_id = $1, wrapped = $2 WHERE id = $3")
                .bind(dk.kek_id as i64)
                .bind(&dk.wrapped)
                .bind(dk.id as i64)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE keks SET retired_at = $1 WHERE id <> $2 AND retired_at IS NULL")
            .bind(now())
            .bind(r.kek.id as i64)
            .execute(&mut *tx)
            .await?;
        insert_data_key(&mut tx, &r.new_data_key).await?;
        let left: i64 = sqlx::query("SELECT COUNT(*) FROM data_keys WHERE kek_id <> $1")
            .bind(r.kek.id as i64)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        if left != 0 {
            // A data key was added since the rotation read them; refuse rather than strand it.
            return Err(super::CatalogError::Corrupt(format!(
                "{left} data key(s) appeared during the rotation; nothing was changed, run it again"
            )));
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_kek(tx: &mut DbConn, k: &KekRow) -> Result<()> {
    sqlx::query("INSERT INTO keks (id, fingerprint, created_at) VALUES ($1, $2, $3)")
        .bind(k.id as i64)
        .bind(&k.fingerprint)
        .bind(k.created_at)
        .execute(tx)
        .await?;
    Ok(())
}

async fn insert_data_key(tx: &mut DbConn, d: &DataKeyRow) -> Result<()> {
    sqlx::query("INSERT INTO data_keys (id, kek_id, wrapped, created_at) VALUES ($1, $2, $3, $4)")
        .bind(d.id as i64)
        .bind(d.kek_id as i64)
        .bind(&d.wrapped)
        .bind(now())
        .execute(tx)
        .await?;
    Ok(())
}
