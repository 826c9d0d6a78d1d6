//! The serving rules, in one place: both backends lock the model's row, read its record and
//! version numbers, and let these functions decide what changes, inside the same transaction.
//! Pure: no I/O.

use super::StoreError;
use crate::error::ErrorCode;
use crate::records::{ModelRecord, ServingCause, ServingChange, ServingUpdate};
use time::OffsetDateTime;
use uuid::Uuid;

/// History entries kept per model (the oldest beyond it are deleted when one is added).
pub const HISTORY_PER_MODEL: usize = 200;

pub fn no_version(model: &str, version: u32) -> StoreError {
    StoreError::Conflict(
        ErrorCode::VersionNotFound,
        format!("model {model:?} has no version {version}"),
    )
}

pub fn no_alias(model: &str, alias: &str) -> StoreError {
    StoreError::Conflict(
        ErrorCode::AliasNotFound,
        format!("model {model:?} has no alias {alias:?}"),
    )
}

/// Applies `update` to `record` (whose versions are `versions`); the history entry, or none
/// when nothing changed (pinning the pinned version, unpinning under `latest`, setting an
/// alias to the version it names).
///
/// # Errors
/// [`StoreError::Conflict`]: `version_not_found` for a version the model lacks,
/// `alias_not_found` when removing an alias it lacks. `record` is unchanged then.
pub fn apply(
    record: &mut ModelRecord,
    versions: &[u32],
    update: &ServingUpdate,
) -> Result<Option<ServingChange>, StoreError> {
    let exists = |v: u32| {
        if versions.contains(&v) {
            Ok(())
        } else {
            Err(no_version(&record.name, v))
        }
    };
    let before = record.served(versions);
    let entry = |from, to, cause, alias: Option<&str>| ServingChange {
        at: OffsetDateTime::now_utc(),
        from,
        to,
        cause,
        alias: alias.map(str::to_owned),
        job_id: None,
    };
    Ok(match update {
        ServingUpdate::Pin(v) => {
            exists(*v)?;
            if record.pinned_version == Some(*v) {
                return Ok(None);
            }
            record.pinned_version = Some(*v);
            Some(entry(before, Some(*v), ServingCause::Pin, None))
        }
        ServingUpdate::Unpin => {
            if record.pinned_version.is_none() {
                return Ok(None);
            }
            record.pinned_version = None;
            Some(entry(
                before,
                record.served(versions),
                ServingCause::Unpin,
                None,
            ))
        }
        ServingUpdate::SetAlias(alias, v) => {
            exists(*v)?;
            let old = record.aliases.insert(alias.clone(), *v);
            if old == Some(*v) {
                return Ok(None);
            }
            Some(entry(old, Some(*v), ServingCause::AliasSet, Some(alias)))
        }
        ServingUpdate::RemoveAlias(alias) => {
            let Some(old) = record.aliases.remove(alias) else {
                return Err(no_alias(&record.name, alias));
            };
            Some(entry(
                Some(old),
                None,
                ServingCause::AliasRemoved,
                Some(alias),
            ))
        }
    })
}

/// The history entry of a version published as `version` by `job` (versions `before` it held
/// already): served at once under `latest`, none under a pin.
pub fn published(
    record: &ModelRecord,
    before: &[u32],
    version: u32,
    job: Uuid,
) -> Option<ServingChange> {
    record.pinned_version.is_none().then(|| ServingChange {
        at: OffsetDateTime::now_utc(),
        from: before.iter().copied().max(),
        to: Some(version),
        cause: ServingCause::Job,
        alias: None,
        job_id: Some(job),
    })
}

/// Whether `version` of the model may be deleted: not while it is pinned or aliased.
///
/// # Errors
/// [`StoreError::Conflict`]: `version_not_found`, or `version_in_use` naming the pin or alias.
pub fn check_delete(
    record: &ModelRecord,
    versions: &[u32],
    version: u32,
) -> Result<(), StoreError> {
    if !versions.contains(&version) {
        return Err(no_version(&record.name, version));
    }
    let name = &record.name;
    if record.pinned_version == Some(version) {
        return Err(StoreError::Conflict(
            ErrorCode::VersionInUse,
            format!(
                "version {version} of model {name:?} is pinned; pin another version or unpin first"
            ),
        ));
    }
    if let Some((alias, _)) = record.aliases.iter().find(|(_, v)| **v == version) {
        return Err(StoreError::Conflict(
            ErrorCode::VersionInUse,
            format!(
                "version {version} of model {name:?} is aliased as {alias:?}; move or delete the alias first"
            ),
        ));
    }
    Ok(())
}

/// The history entry of deleting `version` (allowed by [`check_delete`]) from `versions`:
/// some when it was the one served.
pub fn deleted(record: &ModelRecord, versions: &[u32], version: u32) -> Option<ServingChange> {
    let before = record.served(versions);
    let left: Vec<u32> = versions.iter().copied().filter(|v| *v != version).collect();
    let after = record.served(&left);
    (before != after).then(|| ServingChange {
        at: OffsetDateTime::now_utc(),
        from: before,
        to: after,
        cause: ServingCause::Delete,
        alias: None,
        job_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ModelRecord {
        ModelRecord {
            name: "m".into(),
            spec: crate::nn::NetworkSpec {
                inputs: 1,
                layers: vec![crate::nn::LayerSpec {
                    units: 1,
                    activation: crate::nn::Activation::Identity,
                }],
                loss: crate::nn::Loss::Mse,
            },
            description: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
            next_version: 4,
            pinned_version: None,
            aliases: Default::default(),
        }
    }

    #[test]
    fn pin_and_unpin_record_what_was_served() {
        let mut r = record();
        let c = apply(&mut r, &[1, 2, 3], &ServingUpdate::Pin(1))
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.from, c.to, c.cause),
            (Some(3), Some(1), ServingCause::Pin)
        );
        assert!(
            apply(&mut r, &[1, 2, 3], &ServingUpdate::Pin(1))
                .unwrap()
                .is_none()
        );
        let c = apply(&mut r, &[1, 2, 3], &ServingUpdate::Unpin)
            .unwrap()
            .unwrap();
        assert_eq!((c.from, c.to), (Some(1), Some(3)));
        assert!(
            apply(&mut r, &[1, 2, 3], &ServingUpdate::Unpin)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn unknown_versions_and_aliases_change_nothing() {
        let mut r = record();
        assert!(apply(&mut r, &[1], &ServingUpdate::Pin(9)).is_err());
        assert!(apply(&mut r, &[1], &ServingUpdate::SetAlias("a".into(), 9)).is_err());
        assert!(apply(&mut r, &[1], &ServingUpdate::RemoveAlias("a".into())).is_err());
        assert_eq!(r.pinned_version, None);
        assert!(r.aliases.is_empty());
    }

    #[test]
    fn pinned_and_aliased_versions_cannot_be_deleted() {
        let mut r = record();
        apply(&mut r, &[1, 2, 3], &ServingUpdate::Pin(2)).unwrap();
        apply(
            &mut r,
            &[1, 2, 3],
            &ServingUpdate::SetAlias("old".into(), 1),
        )
        .unwrap();
        assert!(check_delete(&r, &[1, 2, 3], 2).is_err());
        assert!(check_delete(&r, &[1, 2, 3], 1).is_err());
        assert!(check_delete(&r, &[1, 2, 3], 3).is_ok());
        assert!(deleted(&r, &[1, 2, 3], 3).is_none(), "3 is not served");
        r.pinned_version = None;
        let c = deleted(&r, &[1, 2, 3], 3).unwrap();
        assert_eq!((c.from, c.to), (Some(3), Some(2)));
    }

    #[test]
    fn a_job_under_a_pin_changes_nothing_served() {
        let mut r = record();
        assert_eq!(published(&r, &[1], 2, Uuid::nil()).unwrap().from, Some(1));
        r.pinned_version = Some(1);
        assert!(published(&r, &[1], 2, Uuid::nil()).is_none());
    }
}
