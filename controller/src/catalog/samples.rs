//! Samples: values of an instance's probe queries taken on the production server, which a
//! drill compares with what it restored.

use sqlx::Row;

use super::{Catalog, Result};

impl Catalog {
    /// Store samples; a repeat of (instance, name, time) is ignored.
    pub async fn add_samples(&self, samples: &[(String, String, i64, String)]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for (instance, name, taken_at, value) in samples {
            sqlx::query(
                "INSERT INTO samples (instance, name, taken_at, value) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
            )
            .bind(instance)
            .bind(name)
            .bind(taken_at)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The sample of probe `name` nearest before `at` (unix microseconds): (time, value).
    pub async fn sample_before(
        &self,
        instance: &str,
        name: &str,
        at: i64,
    ) -> Result<Option<(i64, String)>> {
        Ok(sqlx::query(
            "SELECT taken_at, value FROM samples WHERE instance = $1 AND name = $2 AND taken_at <= $3
             ORDER BY taken_at DESC LIMIT 1",
        )
        .bind(instance)
        .bind(name)
        .bind(at)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| (r.get(0), r.get(1))))
    }
}

#[cfg(test)]
mod tests {
    use crate::catalog::test_catalog;

    #[tokio::test]
    async fn the_sample_nearest_before_a_point() {
        let (cat, _dir) = test_catalog().await;
        let s = |t: i64, v: &str| ("orders".to_string(), "rows".to_string(), t, v.to_string());
        cat.add_samples(&[s(10, "1"), s(20, "2"), s(30, "3"), s(20, "2")])
            .await
            .unwrap();
        assert_eq!(
            cat.sample_before("orders", "rows", 25).await.unwrap(),
            Some((20, "2".into()))
        );
        assert_eq!(
            cat.sample_before("orders", "rows", 30).await.unwrap(),
            Some((30, "3".into()))
        );
        assert_eq!(cat.sample_before("orders", "rows", 5).await.unwrap(), None);
        assert_eq!(
            cat.sample_before("orders", "other", 50).await.unwrap(),
            None
        );
    }
}
