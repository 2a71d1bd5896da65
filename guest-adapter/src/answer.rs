//! An answer to a guest: JSON text held as a few shared pieces, so a List built from the
//! cache's objects is never assembled on the host. A runtime copies it once, piece by
//! piece, straight into guest memory.

use bytes::Bytes;

/// JSON text in pieces: shared slices of the cache's own bytes and small joints between
/// them (a List header, commas, `]}`). Every piece is UTF-8 and so is their concatenation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pieces: Vec<Bytes>,
    len: usize,
}

impl Answer {
    /// An answer that is one piece.
    pub fn whole(bytes: Bytes) -> Self {
        Self {
            len: bytes.len(),
            pieces: vec![bytes],
        }
    }

    pub fn with_capacity(pieces: usize) -> Self {
        Self {
            pieces: Vec::with_capacity(pieces),
            len: 0,
        }
    }

    /// Appends a piece (empty pieces are skipped).
    pub fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.len += piece.len();
            self.pieces.push(piece);
        }
    }

    pub fn push_static(&mut self, text: &'static str) {
        self.push(Bytes::from_static(text.as_bytes()));
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// Copies the whole answer into `destination`, which must be exactly `len()` bytes.
    pub fn copy_to(&self, destination: &mut [u8]) {
        assert_eq!(destination.len(), self.len, "destination of the wrong size");
        let mut at = 0;
        for piece in &self.pieces {
            destination[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
    }

    /// The answer in one buffer (a copy unless it is one piece already).
    pub fn to_bytes(&self) -> Bytes {
        match self.pieces.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            _ => {
                let mut buffer = vec![0; self.len];
                self.copy_to(&mut buffer);
                Bytes::from(buffer)
            }
        }
    }

    /// The answer as text, in one buffer.
    pub fn to_text(&self) -> String {
        let mut buffer = vec![0; self.len];
        self.copy_to(&mut buffer);
        String::from_utf8(buffer).expect("answers are built from JSON text")
    }
}

impl From<&'static str> for Answer {
    fn from(text: &'static str) -> Self {
        Self::whole(Bytes::from_static(text.as_bytes()))
    }
}

impl From<String> for Answer {
    fn from(text: String) -> Self {
        Self::whole(Bytes::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_read_as_one_text() {
        let mut answer = Answer::with_capacity(3);
        answer.push_static("{\"items\":[");
        answer.push(Bytes::new());
        answer.push(Bytes::from_static(b"1,2"));
        answer.push_static("]}");
        assert_eq!(answer.len(), 15);
        assert_eq!(answer.pieces().len(), 3);
        assert_eq!(answer.to_text(), "{\"items\":[1,2]}");
    }
}
