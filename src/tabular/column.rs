//! Named, typed columns with missing cells, the builder that infers a column's type from its
//! cells, and the table a dataset is.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The code of a missing cell in a categorical column.
pub const MISSING: u32 = u32::MAX;

/// What a dataset's targets are, when the uploader said so; otherwise the model decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Regression,
    Classification,
}

/// A column's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Numeric,
    Categorical,
}

/// A column's cells.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// NaN marks a missing cell; every other value is finite.
    Numeric(Vec<f32>),
    /// `codes[row]` indexes `levels` (first-seen order), or is [`MISSING`].
    Categorical {
        levels: Vec<String>,
        codes: Vec<u32>,
    },
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Numeric(v) => v.len(),
            Values::Categorical { codes, .. } => codes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn kind(&self) -> ColumnType {
        match self {
            Values::Numeric(_) => ColumnType::Numeric,
            Values::Categorical { .. } => ColumnType::Categorical,
        }
    }

    pub fn is_missing(&self, row: usize) -> bool {
        match self {
            Values::Numeric(v) => v[row].is_nan(),
            Values::Categorical { codes, .. } => codes[row] == MISSING,
        }
    }

    /// Number of missing cells.
    pub fn missing(&self) -> usize {
        match self {
            Values::Numeric(v) => v.iter().filter(|x| x.is_nan()).count(),
            Values::Categorical { codes, .. } => codes.iter().filter(|&&c| c == MISSING).count(),
        }
    }
}

/// A named column.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub values: Values,
}

/// How many rows hold a level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LevelCount {
    pub value: String,
    pub count: usize,
}

/// What a column holds, for people: its type, missing cells, and for categoricals the number of
/// levels and the most frequent ones; for numbers their range and mean.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// Missing cells.
    pub missing: usize,
    /// Categorical: distinct values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<usize>,
    /// Categorical: the most frequent values (up to 5), most frequent first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<Vec<LevelCount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
}

const TOP_LEVELS: usize = 5;

impl Column {
    /// Profiles the column (one pass).
    pub fn info(&self) -> ColumnInfo {
        let mut info = ColumnInfo {
            name: self.name.clone(),
            kind: self.values.kind(),
            missing: 0,
            levels: None,
            top: None,
            min: None,
            max: None,
            mean: None,
        };
        match &self.values {
            Values::Numeric(v) => {
                let (mut lo, mut hi, mut sum, mut n) =
                    (f64::INFINITY, f64::NEG_INFINITY, 0f64, 0usize);
                for &x in v {
                    if x.is_nan() {
                        info.missing += 1;
                    } else {
                        let x = f64::from(x);
                        lo = lo.min(x);
                        hi = hi.max(x);
                        sum += x;
                        n += 1;
                    }
                }
                if n > 0 {
                    info.min = Some(lo);
                    info.max = Some(hi);
                    info.mean = Some(sum / n as f64);
                }
            }
            Values::Categorical { levels, codes } => {
                let mut counts = vec![0usize; levels.len()];
                for &c in codes {
                    match counts.get_mut(c as usize) {
                        Some(k) => *k += 1,
                        None => info.missing += 1,
                    }
                }
                let mut order: Vec<usize> = (0..levels.len()).collect();
                order.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(levels[a].cmp(&levels[b])));
                info.levels = Some(levels.len());
                info.top = Some(
                    order
                        .iter()
                        .take(TOP_LEVELS)
                        .map(|&k| LevelCount {
                            value: levels[k].clone(),
                            count: counts[k],
                        })
                        .collect(),
                );
            }
        }
        info
    }
}

/// One cell as a typed source (JSON) gives it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell<'a> {
    Missing,
    Number(f64),
    Text(&'a str),
}

/// Why a cell cannot go into its column.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CellError {
    #[error("{0:?} is not a finite number (the column is numeric)")]
    NotANumber(String),
    #[error("{0} is out of range for a 32-bit float")]
    OutOfRange(f64),
}

/// The cell texts that mean "missing".
#[derive(Clone, Debug, PartialEq)]
pub struct MissingTokens {
    tokens: Vec<String>,
    /// Whether a token reads as a number (then tokens are checked before parsing).
    numeric_token: bool,
}

impl Default for MissingTokens {
    /// Empty, `NA`, `NaN`, `null`, `?`.
    fn default() -> Self {
        MissingTokens::new(["NA", "NaN", "null", "?"].map(String::from).to_vec())
    }
}

impl MissingTokens {
    /// These tokens and the empty cell.
    pub fn new(mut tokens: Vec<String>) -> Self {
        if !tokens.iter().any(String::is_empty) {
            tokens.push(String::new());
        }
        let numeric_token = tokens
            .iter()
            .any(|t| t.parse::<f32>().is_ok_and(f32::is_finite));
        MissingTokens {
            tokens,
            numeric_token,
        }
    }

    pub fn contains(&self, text: &str) -> bool {
        self.tokens.iter().any(|t| t == text)
    }

    /// A cell's text as a [`Cell`]: missing, a finite number, or text.
    pub fn read<'a>(&self, text: &'a str) -> Cell<'a> {
        if self.numeric_token && self.contains(text) {
            return Cell::Missing;
        }
        match text.parse::<f32>() {
            Ok(v) if v.is_finite() => Cell::Number(f64::from(v)),
            _ if self.contains(text) => Cell::Missing,
            _ => Cell::Text(text),
        }
    }
}

enum State {
    Numeric(Vec<f32>),
    Categorical {
        index: HashMap<String, u32>,
        levels: Vec<String>,
        codes: Vec<u32>,
    },
}

/// Builds a column cell by cell. Numeric until a cell holds text (then categorical, the
/// numbers so far becoming their shortest text: `1.50` → `"1.5"`), unless a type was forced.
pub struct ColumnBuilder {
    name: String,
    forced: Option<ColumnType>,
    state: State,
}

fn categorical() -> State {
    State::Categorical {
        index: HashMap::new(),
        levels: Vec::new(),
        codes: Vec::new(),
    }
}

impl ColumnBuilder {
    pub fn new(name: impl Into<String>, forced: Option<ColumnType>) -> Self {
        let state = match forced {
            Some(ColumnType::Categorical) => categorical(),
            _ => State::Numeric(Vec::new()),
        };
        ColumnBuilder {
            name: name.into(),
            forced,
            state,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a cell given as text (CSV).
    ///
    /// # Errors
    /// Text in a column forced numeric.
    pub fn push_text(&mut self, text: &str, missing: &MissingTokens) -> Result<(), CellError> {
        if let State::Categorical { .. } = self.state {
            if missing.contains(text) {
                return self.push(Cell::Missing);
            }
            // A column that became categorical by inference: its numbers before the switch
            // became their shortest text (`1.50` → `1.5`), so numbers after it do too, and one
            // value is one level. A column forced categorical keeps its text (`007`).
            if self.forced.is_none()
                && let Cell::Number(x) = missing.read(text)
            {
                return self.push(Cell::Number(x));
            }
            return self.push(Cell::Text(text));
        }
        self.push(missing.read(text))
    }

    /// Adds a typed cell (JSON).
    ///
    /// # Errors
    /// Text in a column forced numeric; a number beyond f32.
    pub fn push(&mut self, cell: Cell) -> Result<(), CellError> {
        match (&mut self.state, cell) {
            (State::Numeric(v), Cell::Missing) => v.push(f32::NAN),
            (State::Numeric(v), Cell::Number(x)) => {
                #[allow(clippy::cast_possible_truncation)]
                let y = x as f32;
                if !y.is_finite() {
                    return Err(CellError::OutOfRange(x));
                }
                v.push(y);
            }
            (State::Numeric(_), Cell::Text(t)) => {
                if self.forced == Some(ColumnType::Numeric) {
                    return Err(CellError::NotANumber(t.to_owned()));
                }
                self.become_categorical();
                return self.push(cell);
            }
            (State::Categorical { codes, .. }, Cell::Missing) => codes.push(MISSING),
            (State::Categorical { .. }, Cell::Number(x)) => {
                let text = number_text(x);
                return self.push(Cell::Text(&text));
            }
            (
                State::Categorical {
                    index,
                    levels,
                    codes,
                },
                Cell::Text(t),
            ) => {
                let code = match index.get(t) {
                    Some(&c) => c,
                    None => {
                        let c = levels.len() as u32;
                        index.insert(t.to_owned(), c);
                        levels.push(t.to_owned());
                        c
                    }
                };
                codes.push(code);
            }
        }
        Ok(())
    }

    fn become_categorical(&mut self) {
        let State::Numeric(v) = std::mem::replace(&mut self.state, categorical()) else {
            return;
        };
        for x in v {
            if x.is_nan() {
                self.push(Cell::Missing)
            } else {
                let text = format!("{x}");
                self.push(Cell::Text(&text))
            }
            .expect("a categorical column takes any cell");
        }
    }

    pub fn len(&self) -> usize {
        match &self.state {
            State::Numeric(v) => v.len(),
            State::Categorical { codes, .. } => codes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn finish(self) -> Column {
        let values = match self.state {
            State::Numeric(v) => Values::Numeric(v),
            State::Categorical { levels, codes, .. } => Values::Categorical { levels, codes },
        };
        Column {
            name: self.name,
            values,
        }
    }
}

/// A number as a category's text: the shortest text of its 32-bit float (as a numeric column
/// holds it), integers without a fraction (`3`, not `3.0`; `1.50` → `1.5`).
pub fn number_text(x: f64) -> String {
    #[allow(clippy::cast_possible_truncation)]
    let y = x as f32;
    if y.is_finite() {
        format!("{y}")
    } else {
        format!("{x}")
    }
}

/// A number's text as a category's text ([`number_text`]), if the text is a finite number.
pub fn canonical_number(text: &str) -> Option<String> {
    text.parse::<f32>()
        .ok()
        .filter(|x| x.is_finite())
        .map(|x| format!("{x}"))
}

/// Why columns do not make a dataset.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TableError {
    #[error("the dataset has no rows")]
    Empty,
    #[error("no feature columns are left besides the targets")]
    NoFeatures,
    #[error("column {0:?} is entirely missing")]
    AllMissing(String),
    #[error("column {0:?} appears twice")]
    Duplicate(String),
    #[error("column {0} has an empty name")]
    EmptyName(usize),
    #[error("the target column {0:?} holds a single category: there is nothing to learn")]
    OneLevel(String),
    #[error("column {name:?} has {got} cells but the table has {rows} rows")]
    Length {
        name: String,
        got: usize,
        rows: usize,
    },
}

/// A dataset: feature columns, target columns, and (if the uploader said) what the targets are.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    features: Vec<Column>,
    targets: Vec<Column>,
    task: Option<Task>,
    rows: usize,
    /// Columns the uploader left out (`?ignore=`): a model trained on the table accepts them
    /// at prediction and disregards them.
    ignored: Vec<String>,
}

impl Table {
    /// # Errors
    /// No rows or features, columns of unequal length, duplicate names, a column with no value,
    /// a categorical target with one level.
    pub fn new(
        features: Vec<Column>,
        targets: Vec<Column>,
        task: Option<Task>,
    ) -> Result<Self, TableError> {
        if features.is_empty() {
            return Err(TableError::NoFeatures);
        }
        let rows = features[0].values.len();
        if rows == 0 {
            return Err(TableError::Empty);
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in features.iter().chain(&targets).enumerate() {
            if c.name.is_empty() {
                return Err(TableError::EmptyName(i + 1));
            }
            if !seen.insert(c.name.as_str()) {
                return Err(TableError::Duplicate(c.name.clone()));
            }
            if c.values.len() != rows {
                return Err(TableError::Length {
                    name: c.name.clone(),
                    got: c.values.len(),
                    rows,
                });
            }
            if c.values.missing() == rows {
                return Err(TableError::AllMissing(c.name.clone()));
            }
        }
        for t in &targets {
            if let Values::Categorical { levels, .. } = &t.values
                && levels.len() < 2
            {
                return Err(TableError::OneLevel(t.name.clone()));
            }
        }
        Ok(Table {
            features,
            targets,
            task,
            rows,
            ignored: Vec::new(),
        })
    }

    /// The same table, naming the columns left out of it.
    #[must_use]
    pub fn with_ignored(mut self, ignored: Vec<String>) -> Self {
        self.ignored = ignored;
        self
    }

    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn features(&self) -> &[Column] {
        &self.features
    }

    pub fn targets(&self) -> &[Column] {
        &self.targets
    }

    pub fn task(&self) -> Option<Task> {
        self.task
    }

    /// All cells, features and targets.
    pub fn cells(&self) -> usize {
        self.rows * (self.features.len() + self.targets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(cells: &[&str], forced: Option<ColumnType>) -> Result<Column, CellError> {
        let mut b = ColumnBuilder::new("c", forced);
        let missing = MissingTokens::default();
        for c in cells {
            b.push_text(c, &missing)?;
        }
        Ok(b.finish())
    }

    #[test]
    fn numbers_stay_numeric_and_missing_tokens_become_nan() {
        let c = build(&["1.5", "", "NA", "NaN", "null", "?", "-2e3"], None).unwrap();
        let Values::Numeric(v) = &c.values else {
            panic!("numeric expected: {c:?}")
        };
        assert_eq!(v[0], 1.5);
        assert_eq!(v[6], -2000.0);
        assert_eq!(c.values.missing(), 5);
        let info = c.info();
        assert_eq!(
            (info.min, info.max, info.missing),
            (Some(-2000.0), Some(1.5), 5)
        );
    }

    #[test]
    fn one_text_cell_makes_the_column_categorical_and_earlier_numbers_become_levels() {
        let c = build(&["1.50", "NA", "7", "gangnam", "7"], None).unwrap();
        let Values::Categorical { levels, codes } = &c.values else {
            panic!("categorical expected: {c:?}")
        };
        assert_eq!(levels, &["1.5", "7", "gangnam"]);
        assert_eq!(codes, &[0, MISSING, 1, 2, 1]);
        let info = c.info();
        assert_eq!(info.levels, Some(3));
        assert_eq!(info.missing, 1);
        assert_eq!(
            info.top.unwrap()[0],
            LevelCount {
                value: "7".into(),
                count: 2
            }
        );
    }

    #[test]
    fn numbers_after_the_switch_to_categorical_read_like_the_numbers_before_it() {
        // `1.50` before the text cell became `1.5`; `1.50` and `1.5` after it are that level
        // too, and `007` is `7`: one value, one level, whatever its spelling.
        let c = build(&["1.50", "x", "1.5", "1.50", "007", "7"], None).unwrap();
        let Values::Categorical { levels, codes } = &c.values else {
            panic!("categorical expected: {c:?}")
        };
        assert_eq!(levels, &["1.5", "x", "7"]);
        assert_eq!(codes, &[0, 1, 0, 0, 2, 2]);
        // Large integers read as a numeric column would hold them (f32), before and after.
        let c = build(&["16777217", "x", "16777217"], None).unwrap();
        let Values::Categorical { levels, codes } = &c.values else {
            panic!("categorical expected: {c:?}")
        };
        assert_eq!(
            (levels.len(), codes[0] == codes[2]),
            (2, true),
            "{levels:?}"
        );
        assert_eq!(canonical_number("1.50").as_deref(), Some("1.5"));
        assert_eq!(canonical_number("Ideal"), None);
        assert_eq!(number_text(1.5), "1.5");
        assert_eq!(number_text(0.1), "0.1");
    }

    #[test]
    fn forced_types_win_over_inference() {
        let c = build(&["007", "12"], Some(ColumnType::Categorical)).unwrap();
        assert_eq!(
            c.values,
            Values::Categorical {
                levels: vec!["007".into(), "12".into()],
                codes: vec![0, 1]
            },
            "forced categorical keeps the text exactly"
        );
        assert_eq!(
            build(&["1", "x"], Some(ColumnType::Numeric)),
            Err(CellError::NotANumber("x".into()))
        );
        // Infinity and overflow are text, not numbers.
        assert_eq!(
            build(&["inf"], None).unwrap().values.kind(),
            ColumnType::Categorical
        );
    }

    #[test]
    fn configured_missing_tokens_may_be_numbers() {
        let missing = MissingTokens::new(vec!["-999".into()]);
        let mut b = ColumnBuilder::new("c", None);
        for t in ["-999", "3", "", "NA"] {
            b.push_text(t, &missing).unwrap();
        }
        let c = b.finish();
        assert_eq!(c.values.kind(), ColumnType::Categorical, "NA is text now");
        assert_eq!(c.values.missing(), 2);
    }

    #[test]
    fn tables_refuse_unusable_columns() {
        let num = |name: &str, v: Vec<f32>| Column {
            name: name.into(),
            values: Values::Numeric(v),
        };
        let ok = Table::new(
            vec![num("a", vec![1.0, 2.0])],
            vec![num("y", vec![1.0, f32::NAN])],
            None,
        );
        assert_eq!(ok.unwrap().rows(), 2);
        assert_eq!(
            Table::new(
                vec![num("a", vec![f32::NAN; 2])],
                vec![num("y", vec![1.0, 2.0])],
                None
            ),
            Err(TableError::AllMissing("a".into()))
        );
        assert_eq!(
            Table::new(
                vec![num("a", vec![1.0; 2])],
                vec![num("a", vec![1.0, 2.0])],
                None
            ),
            Err(TableError::Duplicate("a".into()))
        );
        let one = Column {
            name: "y".into(),
            values: Values::Categorical {
                levels: vec!["yes".into()],
                codes: vec![0, 0],
            },
        };
        assert_eq!(
            Table::new(vec![num("a", vec![1.0; 2])], vec![one], None),
            Err(TableError::OneLevel("y".into()))
        );
    }
}
