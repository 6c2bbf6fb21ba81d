//! Keyset cursors: the `(instant, id)` of the last item of a page, as an opaque string.
//!
//! The string is 48 lowercase hex digits: the instant in microseconds since the Unix epoch
//! (big-endian two's complement, 8 bytes) followed by the 16 bytes of the id. Clients must treat
//! it as opaque; the encoding only has to round-trip and reject garbage clearly.

use super::StoreError;
use uuid::Uuid;

/// A position in a list ordered by `(instant, id)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// The instant of the last item seen, in microseconds since the epoch.
    pub micros: i64,
    /// The id of the last item seen.
    pub id: Uuid,
}

const LEN: usize = 48;

/// 1900-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z in microseconds: the instants a cursor
/// may hold.
const MIN_MICROS: i64 = -2_208_988_800_000_000;
const MAX_MICROS: i64 = 253_402_300_799_999_999;

impl Cursor {
    /// The opaque string handed to clients.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::with_capacity(LEN);
        for byte in self.micros.to_be_bytes().iter().chain(self.id.as_bytes()) {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        out
    }

    /// Decodes a string from [`Cursor::encode`]; anything else is [`StoreError::InvalidCursor`].
    pub(crate) fn decode(text: &str) -> Result<Cursor, StoreError> {
        let invalid =
            |why: &str| StoreError::InvalidCursor(format!("{why} (got {:?})", truncated(text)));
        if text.len() != LEN {
            return Err(invalid("expected the next_cursor of a previous page"));
        }
        let mut bytes = [0u8; LEN / 2];
        for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
            let hi = nibble(pair[0]).ok_or_else(|| invalid("not a cursor"))?;
            let lo = nibble(pair[1]).ok_or_else(|| invalid("not a cursor"))?;
            bytes[i] = (hi << 4) | lo;
        }
        let (micros, id) = bytes.split_at(8);
        let micros = i64::from_be_bytes(micros.try_into().map_err(|_| invalid("not a cursor"))?);
        let id = Uuid::from_slice(id).map_err(|_| invalid("not a cursor"))?;
        // Forged instants outside what both databases can hold would be a 500 on PostgreSQL
        // and an empty page on SQLite: reject them the same way everywhere.
        if !(MIN_MICROS..=MAX_MICROS).contains(&micros) {
            return Err(invalid("not a cursor"));
        }
        Ok(Cursor { micros, id })
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// At most 60 characters of a client's string, for an error message.
fn truncated(text: &str) -> String {
    text.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for micros in [0, 1, -1, MIN_MICROS, MAX_MICROS, 1_764_331_200_123_456] {
            let cursor = Cursor {
                micros,
                id: Uuid::now_v7(),
            };
            let text = cursor.encode();
            assert_eq!(text.len(), LEN);
            assert_eq!(Cursor::decode(&text).expect("decodes"), cursor);
        }
    }

    #[test]
    fn rejects_garbage() {
        for garbage in [
            "",
            "abc",
            "zz",
            &"g".repeat(LEN),
            &"é".repeat(LEN / 2),
            "'; DROP TABLE runs; --",
            &Cursor {
                micros: i64::MAX,
                id: Uuid::nil(),
            }
            .encode(),
            &Cursor {
                micros: i64::MIN,
                id: Uuid::nil(),
            }
            .encode(),
            // A well-formed cursor whose instant lies around 29 000 BC.
            &format!("{}{}", "f21f494c589c0000", "0".repeat(32)),
        ] {
            match Cursor::decode(garbage) {
                Err(StoreError::InvalidCursor(_)) => {}
                other => panic!("{garbage:?} gave {other:?}"),
            }
        }
    }
}
