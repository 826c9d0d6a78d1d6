//! The rule both backends apply when a sweep ends, inside the transaction that ends it: pin the
//! best trial's version if asked. A version that cannot be pinned (pruned, or its model
//! deleted meanwhile) does not keep the sweep from ending: it ends unpinned. Pure: the pin
//! itself is the caller's closure.

use super::{ServingChanged, StoreError};
use crate::records::{ServingUpdate, SweepRecord};

/// `sweep` as it ends, with its result's pinned version as decided, and the serving change.
///
/// # Errors
/// What `pin` fails with, but for a conflict (the version or model is gone).
pub fn pin_best(
    sweep: &SweepRecord,
    pin: Option<u32>,
    change: impl FnOnce(&ServingUpdate) -> Result<ServingChanged, StoreError>,
) -> Result<(SweepRecord, Option<ServingChanged>), StoreError> {
    let mut sweep = sweep.clone();
    let serving = match pin {
        None => None,
        Some(v) => match change(&ServingUpdate::Pin(v)) {
            Ok(done) => Some(done),
            Err(StoreError::Conflict(code, message)) => {
                tracing::warn!(sweep_id = %sweep.id, ?code, %message, "cannot pin the best trial");
                None
            }
            Err(e) => return Err(e),
        },
    };
    if let Some(r) = &mut sweep.result {
        r.pinned_version = serving.as_ref().and(pin);
    }
    Ok((sweep, serving))
}
