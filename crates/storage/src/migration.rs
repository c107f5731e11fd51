//! Schema migrations, as both adapters keep them: numbered SQL texts applied once, in order,
//! each recorded with the SHA-256 of its text so that one edited after it was applied is
//! refused at start instead of leaving databases that applied different texts under one
//! version.

use std::fmt::Write;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// One schema change: applied once, in order, inside the migration transaction.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) sql: &'static str,
}

impl Migration {
    /// The SHA-256 of the migration's text, in lowercase hex: what the bookkeeping table
    /// records. Every byte counts (a comment or whitespace too), since nothing short of the
    /// whole text says the schema is the same.
    pub(crate) fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes())
            .iter()
            .fold(String::with_capacity(64), |mut hex, b| {
                let _ = write!(hex, "{b:02x}");
                hex
            })
    }
}

/// Checks the migrations a database applied (version, recorded checksum) against the code's.
/// Returns the checksums to record for the applied ones that have none (applied before
/// checksums were kept: their text is taken as it is now), or `MigrationEdited` for the
/// first whose recorded checksum differs.
///
/// Versions the database applied that the code does not have are left alone: a newer build
/// applied them, and an older replica runs on its schema during a rolling upgrade as before.
pub(crate) fn verify(
    service: &str,
    migrations: &[Migration],
    applied: &[(i64, Option<String>)],
) -> Result<Vec<(i64, String)>> {
    let mut backfill = Vec::new();
    for (version, recorded) in applied {
        let Some(m) = migrations.iter().find(|m| m.version == *version) else {
            continue;
        };
        let code = m.checksum();
        match recorded {
            None => backfill.push((*version, code)),
            Some(r) if *r == code => {}
            Some(r) => {
                return Err(Error::MigrationEdited {
                    service: service.to_owned(),
                    version: *version,
                    applied: r.clone(),
                    code,
                });
            }
        }
    }
    Ok(backfill)
}

/// What both adapters' migration tests check.
#[cfg(test)]
pub(crate) mod testing {
    use super::Migration;
    use crate::Error;

    /// What the bookkeeping table holds once `migrations` are applied: each version with the
    /// checksum of its text.
    pub(crate) fn checksums(migrations: &[Migration]) -> Vec<(i64, Option<String>)> {
        migrations
            .iter()
            .map(|m| (m.version, Some(m.checksum())))
            .collect()
    }

    /// Asserts that `refused` refuses `edited`, applied earlier as `applied`, naming
    /// `service`, the version and both checksums (in its fields and its message).
    pub(crate) fn assert_refused_edit(
        refused: Option<&Error>,
        service: &str,
        applied: &Migration,
        edited: &Migration,
    ) {
        let Some(
            e @ Error::MigrationEdited {
                service: named,
                version,
                applied: recorded,
                code,
            },
        ) = refused
        else {
            panic!("not refused: {refused:?}");
        };
        assert_eq!(
            (named.as_str(), *version, recorded, code),
            (
                service,
                edited.version,
                &applied.checksum(),
                &edited.checksum()
            )
        );
        let message = e.to_string();
        assert!(
            message.contains(service) && message.contains(recorded) && message.contains(code),
            "{message}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIGRATIONS: &[Migration] = &[
        Migration {
            version: 1,
            sql: "CREATE TABLE t (n INTEGER);",
        },
        Migration {
            version: 2,
            sql: "CREATE TABLE u (n INTEGER);",
        },
    ];

    #[test]
    fn the_checksum_is_the_sha256_of_the_text() {
        let empty = Migration {
            version: 1,
            sql: "",
        };
        // SHA-256 of nothing, from FIPS 180-2's test vectors.
        assert_eq!(
            empty.checksum(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(MIGRATIONS[0].checksum(), MIGRATIONS[1].checksum());
    }

    #[test]
    fn applied_migrations_are_verified_backfilled_or_refused() {
        let (one, two) = (MIGRATIONS[0].checksum(), MIGRATIONS[1].checksum());
        // Recorded and unchanged; a version only a newer build knows is left alone.
        let fine = verify("s", MIGRATIONS, &[(1, Some(one.clone())), (3, None)]).unwrap();
        assert!(fine.is_empty(), "{fine:?}");
        // Applied before checksums: recorded as the text is now.
        let backfill = verify("s", MIGRATIONS, &[(1, Some(one.clone())), (2, None)]).unwrap();
        assert_eq!(backfill, [(2, two.clone())]);
        // Edited after it was applied: refused, naming service, version and both checksums.
        let edited = verify(
            "triage",
            MIGRATIONS,
            &[(1, Some(one)), (2, Some("ab".into()))],
        );
        let Err(e @ Error::MigrationEdited { .. }) = edited else {
            panic!("not refused: {edited:?}");
        };
        let message = e.to_string();
        for part in ["triage", "migration 2", "ab", two.as_str()] {
            assert!(message.contains(part), "{part} missing from: {message}");
        }
    }
}
