//! The audit log of operators' changes, and revoked certificates.

use sqlx::Row;

use super::{Catalog, Result, now};

#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub at: i64,
    pub who: String,
    pub action: String,
    pub detail: String,
    pub outcome: String,
}

impl Catalog {
    pub async fn record_audit(
        &self,
        who: &str,
        action: &str,
        detail: &str,
        outcome: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, who, action, detail, outcome) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(now())
        .bind(who)
        .bind(action)
        .bind(detail)
        .bind(outcome)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The newest `limit` entries, newest first.
    pub async fn audit_log(&self, limit: u32) -> Result<Vec<AuditRow>> {
        Ok(sqlx::query(
            "SELECT at, who, action, detail, outcome FROM audit_log ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| AuditRow {
            at: r.get(0),
            who: r.get(1),
            action: r.get(2),
            detail: r.get(3),
            outcome: r.get(4),
        })
        .collect())
    }

    /// Refuse a certificate from now on. False when it was revoked already.
    pub async fn revoke_certificate(
        &self,
        fingerprint: &str,
        identity: &str,
        by: &str,
    ) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO revoked_certificates (fingerprint, identity, revoked_at, revoked_by)
             VALUES ($1, $2, $3, $4) ON CONFLICT (fingerprint) DO NOTHING",
        )
        .bind(fingerprint)
        .bind(identity)
        .bind(now())
        .bind(by)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Every revoked certificate: (fingerprint, identity).
    pub async fn revocations(&self) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query("SELECT fingerprint, identity FROM revoked_certificates")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        )
    }
}
