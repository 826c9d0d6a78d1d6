//! The sample datasets bundled in the binary (iris, digits): their CSV text, what they hold, and
//! a network and training parameters known to fit them, so that a first visit to an empty server
//! can start with one click. Pure data; parsing them is the caller's (on a blocking thread, with
//! the same CSV reader as an upload).

use crate::nn::{Activation, LayerSpec};
use std::sync::OnceLock;

/// One bundled dataset.
#[derive(Debug)]
pub struct Sample {
    /// The sample's name, also the name of the dataset made from it.
    pub name: &'static str,
    pub description: &'static str,
    /// The target column.
    pub target: &'static str,
    /// The CSV text, with a header row.
    pub csv: &'static str,
    /// Hidden layers, then the output layer, of a network that learns it.
    pub layers: &'static [(usize, Activation)],
    /// Training parameters that suit that network.
    pub epochs: u32,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub validation_split: f64,
}

impl Sample {
    /// Data rows (the header not counted).
    pub fn rows(&self) -> usize {
        self.shape().0
    }

    /// Columns, the target included.
    pub fn columns(&self) -> usize {
        self.shape().1
    }

    /// The column names, in order.
    pub fn header(&self) -> Vec<&'static str> {
        let line = self.csv.lines().next().unwrap_or_default();
        line.split(',').map(str::trim).collect()
    }

    pub fn layers(&self) -> Vec<LayerSpec> {
        self.layers
            .iter()
            .map(|&(units, activation)| LayerSpec { units, activation })
            .collect()
    }

    /// (rows, columns), counted once per sample (the files hold no quoted line breaks).
    fn shape(&self) -> (usize, usize) {
        static SHAPES: OnceLock<Vec<(usize, usize)>> = OnceLock::new();
        let shapes = SHAPES.get_or_init(|| {
            SAMPLES
                .iter()
                .map(|s| {
                    let rows = s.csv.lines().filter(|l| !l.trim().is_empty()).count();
                    (rows.saturating_sub(1), s.header().len())
                })
                .collect()
        });
        let i = SAMPLES
            .iter()
            .position(|s| s.name == self.name)
            .expect("a sample is one of SAMPLES");
        shapes[i]
    }
}

/// Every bundled sample, in the order offered.
pub static SAMPLES: [Sample; 2] = [
    Sample {
        name: "iris",
        description: "Fisher's iris flowers: 150 rows, four measurements in cm, three species \
                      to tell apart. Small enough to train in a second.",
        target: "species",
        csv: include_str!("../datasets/iris.csv"),
        layers: &[(16, Activation::Relu), (3, Activation::Softmax)],
        epochs: 60,
        learning_rate: 0.01,
        batch_size: 16,
        validation_split: 0.2,
    },
    Sample {
        name: "digits",
        description: "Handwritten digits (the UCI set scikit-learn ships): 1797 images of 8×8 \
                      pixels, grey levels 0 to 16, ten classes.",
        target: "digit",
        csv: include_str!("../datasets/digits.csv"),
        layers: &[(32, Activation::Relu), (10, Activation::Softmax)],
        epochs: 30,
        learning_rate: 0.001,
        batch_size: 16,
        validation_split: 0.2,
    },
];

/// The sample of that name.
pub fn find(name: &str) -> Option<&'static Sample> {
    SAMPLES.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_whole_and_their_targets_exist() {
        let iris = find("iris").unwrap();
        assert_eq!((iris.rows(), iris.columns()), (150, 5));
        assert_eq!(iris.header().last(), Some(&"species"));
        let digits = find("digits").unwrap();
        assert_eq!((digits.rows(), digits.columns()), (1797, 65));
        assert_eq!(digits.header()[0], "digit");
        assert!(find("mnist").is_none());
    }
}
