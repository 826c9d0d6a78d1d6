//! How a dataset's cells are laid out in both backends: 4-byte little-endian words, column after
//! column, features in one value and targets in another (f32 values with NaN for missing, or
//! u32 level codes with `u32::MAX` for missing, as the record's column list says).

use super::{DatasetRecord, StoreError};
use crate::tabular::{Column, MISSING, Table, Values};

/// The cells of `cols`, column after column, as 4-byte words.
pub fn column_words(cols: &[Column]) -> impl Iterator<Item = [u8; 4]> + '_ {
    cols.iter()
        .flat_map(|c| -> Box<dyn Iterator<Item = [u8; 4]> + '_> {
            match &c.values {
                Values::Numeric(v) => Box::new(v.iter().map(|x| x.to_le_bytes())),
                Values::Categorical { codes, .. } => {
                    Box::new(codes.iter().map(|x| x.to_le_bytes()))
                }
            }
        })
}

/// Little-endian words of a byte string (a trailing partial word is ignored).
pub fn words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Rebuilds a dataset with typed columns from its record and its two word arrays.
///
/// # Errors
/// The words do not match the record (shorter than its columns, a level code out of range).
pub fn table_from_words(
    meta: &DatasetRecord,
    features: &[u32],
    targets: &[u32],
    fail: impl Fn(&str) -> StoreError,
) -> Result<Table, StoreError> {
    let n = meta.rows;
    let (mut fcols, mut tcols) = (Vec::new(), Vec::new());
    let (mut fi, mut ti) = (0usize, 0usize);
    for c in &meta.columns {
        let (words, at, out) = if c.target {
            (targets, &mut ti, &mut tcols)
        } else {
            (features, &mut fi, &mut fcols)
        };
        let cells = words
            .get(*at * n..(*at + 1) * n)
            .ok_or_else(|| fail("a stored dataset is shorter than its columns"))?;
        *at += 1;
        let values = match &c.level_names {
            None => Values::Numeric(cells.iter().map(|&w| f32::from_bits(w)).collect()),
            Some(levels) => {
                if cells
                    .iter()
                    .any(|&w| w != MISSING && w as usize >= levels.len())
                {
                    return Err(fail("a stored level code is out of range"));
                }
                Values::Categorical {
                    levels: levels.clone(),
                    codes: cells.to_vec(),
                }
            }
        };
        out.push(Column {
            name: c.info.name.clone(),
            values,
        });
    }
    Table::new(fcols, tcols, meta.task)
        .map(|t| t.with_ignored(meta.ignored.clone()))
        .map_err(|e| fail(&e.to_string()))
}
