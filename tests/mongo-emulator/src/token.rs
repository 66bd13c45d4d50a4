//! Resume tokens: `{_data: "<hex>"}` encoding (cluster time, kind, index within a
//! transaction, fragment) so that the hex strings sort in event order, as MongoDB's
//! (which encode cluster time first, then `txnOpIndex`) do.

use bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};

use crate::error::CommandError;
use crate::oplog::Pos;

/// What a token marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A change event.
    Event,
    /// The invalidate following a drop/rename/dropDatabase event.
    Invalidate,
    /// A high-water mark (postBatchResumeToken with no event): everything up to the time.
    HighWater,
}

impl TokenKind {
    fn byte(self) -> u8 {
        match self {
            TokenKind::Event => 1,
            TokenKind::Invalidate => 2,
            TokenKind::HighWater => 3,
        }
    }
}

/// A decoded resume token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeToken {
    /// Cluster time of the event or high-water mark.
    pub ts: Timestamp,
    /// Event, invalidate or high-water mark.
    pub kind: TokenKind,
    /// The event's index within its transaction (`txnOpIndex`; 0 outside one): the
    /// events of a transaction share their commit's cluster time.
    pub op: u32,
    /// The fragment (0-based) of an event split by `$changeStreamSplitLargeEvent`;
    /// `None` for a whole event. Encoded after the kind and index, so a fragment's
    /// token sorts after its event's and before the next event's.
    pub fragment: Option<u16>,
}

/// Format marker byte (MongoDB's key-string type byte for a Timestamp is 0x82).
const PREFIX: &str = "82";

impl ResumeToken {
    /// A token of `kind` at `ts`.
    pub fn new(ts: Timestamp, kind: TokenKind) -> Self {
        ResumeToken {
            ts,
            kind,
            op: 0,
            fragment: None,
        }
    }
    /// The token of the event at `at`.
    pub fn event(at: Pos) -> Self {
        ResumeToken {
            ts: at.ts,
            kind: TokenKind::Event,
            op: at.op,
            fragment: None,
        }
    }
    /// The token of fragment `n` (0-based) of the event at `at`.
    pub fn fragment(at: Pos, n: u16) -> Self {
        ResumeToken {
            fragment: Some(n),
            ..Self::event(at)
        }
    }
    /// A token resuming after `at`: a high-water mark at the end of a cluster time,
    /// else the event token of that position (inside a transaction's events).
    pub fn after(at: Pos) -> Self {
        if at.op == u32::MAX {
            Self::new(at.ts, TokenKind::HighWater)
        } else {
            Self::event(at)
        }
    }
    /// The position a stream resumed from this token continues after (for a fragment,
    /// its event's position).
    pub fn pos(self) -> Pos {
        match self.kind {
            TokenKind::Event => Pos {
                ts: self.ts,
                op: self.op,
            },
            TokenKind::Invalidate | TokenKind::HighWater => Pos::end_of(self.ts),
        }
    }
    /// `{_data: hex}`.
    pub fn to_document(self) -> Document {
        doc! { "_data": self.hex() }
    }
    /// `{_data: hex}`, encoded.
    pub fn to_raw(self) -> RawDocumentBuf {
        let mut d = RawDocumentBuf::new();
        d.append("_data", self.hex());
        d
    }
    fn hex(self) -> String {
        let mut hex = format!(
            "{PREFIX}{:08X}{:08X}{:02X}",
            self.ts.time,
            self.ts.increment,
            self.kind.byte()
        );
        // The index is written when it is not 0 or a fragment follows (so the hex of a
        // plain event is unchanged and every form sorts in event order).
        if self.op != 0 || self.fragment.is_some() {
            hex.push_str(&format!("{:08X}", self.op));
        }
        if let Some(n) = self.fragment {
            hex.push_str(&format!("{n:04X}"));
        }
        hex
    }
    /// Parse a token given by a client; malformed → 260 InvalidResumeToken.
    pub fn parse(v: &Bson) -> Result<ResumeToken, CommandError> {
        let bad = || CommandError::new(260, "Invalid resume token: could not decode _data");
        let d = match v {
            Bson::Document(d) => d,
            _ => return Err(CommandError::new(260, "resume token must be a document")),
        };
        let data = match d.get("_data") {
            Some(Bson::String(s)) => s,
            _ => {
                return Err(CommandError::new(
                    260,
                    "resume token must contain a string _data field",
                ))
            }
        };
        if !matches!(data.len(), 20 | 28 | 32) || !data.starts_with(PREFIX) || !data.is_ascii() {
            return Err(bad());
        }
        let time = u32::from_str_radix(&data[2..10], 16).map_err(|_| bad())?;
        let increment = u32::from_str_radix(&data[10..18], 16).map_err(|_| bad())?;
        let kind = match u8::from_str_radix(&data[18..20], 16).map_err(|_| bad())? {
            1 => TokenKind::Event,
            2 => TokenKind::Invalidate,
            3 => TokenKind::HighWater,
            _ => return Err(bad()),
        };
        if data.len() > 20 && kind != TokenKind::Event {
            return Err(bad());
        }
        let op = match data.get(20..28) {
            Some(o) => u32::from_str_radix(o, 16).map_err(|_| bad())?,
            None => 0,
        };
        let fragment = match data.get(28..) {
            Some(f) if !f.is_empty() => Some(u16::from_str_radix(f, 16).map_err(|_| bad())?),
            _ => None,
        };
        Ok(ResumeToken {
            ts: Timestamp { time, increment },
            kind,
            op,
            fragment,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_sort_in_event_order() {
        let a = ResumeToken::new(
            Timestamp {
                time: 10,
                increment: 2,
            },
            TokenKind::Event,
        );
        let b = ResumeToken::new(
            Timestamp {
                time: 10,
                increment: 2,
            },
            TokenKind::HighWater,
        );
        let c = ResumeToken::new(
            Timestamp {
                time: 11,
                increment: 1,
            },
            TokenKind::Event,
        );
        let da = a.to_document();
        assert_eq!(ResumeToken::parse(&Bson::Document(da.clone())).unwrap(), a);
        let s = |d: Document| d.get_str("_data").unwrap().to_string();
        assert!(s(da) < s(b.to_document()));
        assert!(s(b.to_document()) < s(c.to_document()));
    }

    #[test]
    fn fragment_tokens_sort_between_their_event_and_the_next() {
        let ts = Timestamp {
            time: 10,
            increment: 2,
        };
        let next = Timestamp {
            time: 10,
            increment: 3,
        };
        let hex = |t: ResumeToken| t.to_document().get_str("_data").unwrap().to_string();
        let at = Pos { ts, op: 0 };
        let f1 = ResumeToken::fragment(at, 1);
        assert_eq!(
            ResumeToken::parse(&Bson::Document(f1.to_document())).unwrap(),
            f1
        );
        assert!(hex(ResumeToken::new(ts, TokenKind::Event)) < hex(ResumeToken::fragment(at, 0)));
        assert!(hex(ResumeToken::fragment(at, 0)) < hex(f1));
        assert!(hex(f1) < hex(ResumeToken::new(ts, TokenKind::HighWater)));
        assert!(hex(f1) < hex(ResumeToken::new(next, TokenKind::Event)));
    }

    #[test]
    fn transaction_tokens_sort_by_index_then_fragment() {
        let ts = Timestamp {
            time: 10,
            increment: 2,
        };
        let at = |op| Pos { ts, op };
        let hex = |t: ResumeToken| t.to_document().get_str("_data").unwrap().to_string();
        let order = [
            ResumeToken::event(at(0)),
            ResumeToken::fragment(at(0), 0),
            ResumeToken::fragment(at(0), 1),
            ResumeToken::event(at(1)),
            ResumeToken::fragment(at(1), 0),
            ResumeToken::event(at(2)),
            ResumeToken::new(ts, TokenKind::HighWater),
        ];
        for pair in order.windows(2) {
            assert!(hex(pair[0]) < hex(pair[1]), "{:?} < {:?}", pair[0], pair[1]);
        }
        for t in order {
            assert_eq!(
                ResumeToken::parse(&Bson::Document(t.to_document())).unwrap(),
                t
            );
        }
        assert_eq!(ResumeToken::event(at(2)).pos(), at(2));
    }

    #[test]
    fn malformed_token_is_260() {
        let e = ResumeToken::parse(&Bson::Document(doc! {"_data": "zz"})).unwrap_err();
        assert_eq!(e.code, 260);
    }
}
