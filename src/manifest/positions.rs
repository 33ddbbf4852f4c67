//! Where each YAML node starts, by path (`spec.columns[2].type`), so checks that run
//! after deserialization can still name a line and column.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line and column, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Node positions of every document in one YAML file.
#[derive(Debug, Default)]
pub struct Positions {
    /// (document index, path) -> position of the node's value.
    values: HashMap<(usize, String), Pos>,
    /// (document index, path) -> position of the mapping key that holds the node.
    keys: HashMap<(usize, String), Pos>,
}

impl Positions {
    /// Indexes `text`. A syntax error leaves the index partial; serde_yaml reports it.
    pub fn index(text: &str) -> Positions {
        let mut recv = Recv::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut recv, true);
        recv.out
    }

    /// Position of the value at `path` in document `doc`, or of the nearest parent that
    /// exists (a missing field is reported where its parent starts).
    pub fn value(&self, doc: usize, path: &str) -> Pos {
        let mut p = path.to_string();
        loop {
            if let Some(pos) = self.values.get(&(doc, p.clone())) {
                return *pos;
            }
            match parent(&p) {
                Some(up) => p = up,
                None => return Pos { line: 1, col: 1 },
            }
        }
    }

    /// Position of the key naming `path` (falls back to the value).
    pub fn key(&self, doc: usize, path: &str) -> Pos {
        self.keys
            .get(&(doc, path.to_string()))
            .copied()
            .unwrap_or_else(|| self.value(doc, path))
    }

    /// Start of document `doc`.
    pub fn document(&self, doc: usize) -> Pos {
        self.value(doc, "")
    }
}

fn parent(path: &str) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(path[..cut].to_string())
}

/// Joins a child segment onto a path.
pub fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub fn item(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Recv {
    out: Positions,
    doc: Option<usize>,
    stack: Vec<Frame>,
}

impl Recv {
    fn pos(mark: &Marker) -> Pos {
        // yaml-rust2 lines are 1-based, columns 0-based.
        Pos {
            line: mark.line(),
            col: mark.col() + 1,
        }
    }

    /// Path of the value that starts now, or None when a mapping key is expected.
    fn value_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key }) => key.take().map(|k| child(path, &k)),
            Some(Frame::Seq { path, next }) => {
                let p = item(path, *next);
                *next += 1;
                Some(p)
            }
        }
    }

    fn record(&mut self, path: String, mark: &Marker) {
        let doc = self.doc.unwrap_or(0);
        self.out
            .values
            .entry((doc, path))
            .or_insert(Self::pos(mark));
    }
}

impl MarkedEventReceiver for Recv {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::DocumentStart => {
                self.doc = Some(self.doc.map_or(0, |d| d + 1));
                self.stack.clear();
            }
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map {
                    path,
                    key: key @ None,
                }) = self.stack.last_mut()
                {
                    let k = child(path, &value);
                    let map_path = path.clone();
                    *key = Some(value);
                    let doc = self.doc.unwrap_or(0);
                    let pos = Self::pos(&mark);
                    self.out.keys.entry((doc, k)).or_insert(pos);
                    // Block mappings are marked after their first key: start them there.
                    let start = self.out.values.entry((doc, map_path)).or_insert(pos);
                    if pos < *start {
                        *start = pos;
                    }
                    return;
                }
                if let Some(p) = self.value_path() {
                    self.record(p, &mark);
                }
            }
            Event::Alias(_) => {
                if let Some(p) = self.value_path() {
                    self.record(p, &mark);
                }
            }
            Event::MappingStart(..) => {
                let p = self.value_path().unwrap_or_default();
                self.record(p.clone(), &mark);
                self.stack.push(Frame::Map { path: p, key: None });
            }
            Event::SequenceStart(..) => {
                let p = self.value_path().unwrap_or_default();
                self.record(p.clone(), &mark);
                self.stack.push(Frame::Seq { path: p, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_nested_paths_per_document() {
        let text = "a: 1\nb:\n  - x: 2\n  - y: [3, 4]\n---\nc: {d: 5}\n";
        let p = Positions::index(text);
        assert_eq!(p.value(0, "a"), Pos { line: 1, col: 4 });
        assert_eq!(p.value(0, "b[0].x"), Pos { line: 3, col: 8 });
        assert_eq!(p.value(0, "b[1].y[1]"), Pos { line: 4, col: 12 });
        assert_eq!(p.key(0, "b[1].y"), Pos { line: 4, col: 5 });
        assert_eq!(p.value(1, "c.d"), Pos { line: 6, col: 8 });
        // A missing node falls back to its parent.
        assert_eq!(p.value(0, "b[0].missing"), Pos { line: 3, col: 5 });
    }
}
