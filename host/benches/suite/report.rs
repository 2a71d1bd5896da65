//! The suite's output: a table per section as it finishes, the targets at the end, and
//! the same figures as one JSON document.

use std::path::Path;

use serde_json::{Map, Value, json};

/// One cell of a table: text, or a number shown with `decimals` digits.
#[derive(Debug, Clone)]
pub enum Cell {
    Text(String),
    Number(f64, usize),
}

pub fn text(value: impl Into<String>) -> Cell {
    Cell::Text(value.into())
}

pub fn num(value: f64, decimals: usize) -> Cell {
    Cell::Number(value, decimals)
}

impl Cell {
    fn shown(&self) -> String {
        match self {
            Cell::Text(text) => text.clone(),
            Cell::Number(value, decimals) => format!("{value:.decimals$}"),
        }
    }

    fn json(&self) -> Value {
        match self {
            Cell::Text(text) => json!(text),
            Cell::Number(value, _) => json!(value),
        }
    }
}

/// The figures of one section.
pub struct Table {
    name: &'static str,
    title: String,
    columns: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(name: &'static str, title: impl Into<String>, columns: &[&'static str]) -> Self {
        Self {
            name,
            title: title.into(),
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        assert_eq!(cells.len(), self.columns.len(), "{}: row width", self.name);
        self.rows.push(cells);
    }

    fn print(&self) {
        let shown: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(Cell::shown).collect())
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|c| {
                shown
                    .iter()
                    .map(|row| row[c].chars().count())
                    .chain([self.columns[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        println!("\n## {}\n", self.title);
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, width))| {
                    // Names left, figures right.
                    if i == 0 {
                        format!("{cell:<width$}")
                    } else {
                        format!("{cell:>width$}")
                    }
                })
                .collect();
            println!("| {} |", padded.join(" | "));
        };
        line(self.columns.clone());
        println!(
            "|{}|",
            widths
                .iter()
                .map(|w| "-".repeat(w + 2))
                .collect::<Vec<_>>()
                .join("|")
        );
        for row in &shown {
            line(row.iter().map(String::as_str).collect());
        }
    }

    fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let object: Map<String, Value> = self
                    .columns
                    .iter()
                    .zip(row)
                    .map(|(column, cell)| ((*column).to_owned(), cell.json()))
                    .collect();
                Value::Object(object)
            })
            .collect();
        json!({"title": self.title, "rows": rows})
    }
}

/// A target of issue 5: a ratio measured in this run against its limit.
pub struct Target {
    pub name: String,
    pub measured: f64,
    pub limit: f64,
    /// Whether the measured figure must stay at or below the limit (else at or above).
    pub at_most: bool,
}

impl Target {
    fn met(&self) -> bool {
        if self.at_most {
            self.measured <= self.limit
        } else {
            self.measured >= self.limit
        }
    }
}

#[derive(Default)]
pub struct Report {
    tables: Vec<Table>,
    targets: Vec<Target>,
}

impl Report {
    /// Prints `table` now and keeps it for the JSON document.
    pub fn add(&mut self, table: Table) {
        table.print();
        self.tables.push(table);
    }

    pub fn at_most(&mut self, name: impl Into<String>, measured: f64, limit: f64) {
        self.targets.push(Target {
            name: name.into(),
            measured,
            limit,
            at_most: true,
        });
    }

    pub fn at_least(&mut self, name: impl Into<String>, measured: f64, limit: f64) {
        self.targets.push(Target {
            name: name.into(),
            measured,
            limit,
            at_most: false,
        });
    }

    /// Prints the targets and writes everything to `path` as JSON.
    pub fn finish(self, path: &Path, machine: Value) -> anyhow::Result<()> {
        let mut targets = Table::new(
            "targets",
            "Targets",
            &["target", "measured", "limit", "met"],
        );
        for target in &self.targets {
            let bound = if target.at_most { "≤" } else { "≥" };
            targets.row(vec![
                text(&target.name),
                num(target.measured, 2),
                text(format!("{bound} {}", target.limit)),
                text(if target.met() { "yes" } else { "NO" }),
            ]);
        }
        targets.print();
        let sections: Map<String, Value> = self
            .tables
            .iter()
            .map(|table| (table.name.to_owned(), table.json()))
            .collect();
        let targets: Vec<Value> = self
            .targets
            .iter()
            .map(|t| {
                json!({"target": t.name, "measured": t.measured, "limit": t.limit,
                       "at_most": t.at_most, "met": t.met()})
            })
            .collect();
        let document = json!({"machine": machine, "sections": sections, "targets": targets});
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(&document)?)?;
        println!("\nwritten to {}", path.display());
        Ok(())
    }
}
