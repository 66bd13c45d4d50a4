//! Reading newline-terminated lines with a hard size bound: an over-long line is
//! discarded up to its newline without ever being buffered, so one client cannot make
//! the daemon allocate without limit.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Result of reading one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// A line (newline stripped) is in the buffer. A last line without a newline at end
    /// of input counts too.
    Complete,
    /// The line exceeded the bound; it was skipped up to and including its newline.
    TooLong,
    /// End of input, no more lines.
    Eof,
}

/// Read one line into `buf` (cleared first), keeping at most `max` bytes.
pub async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::Eof,
                (false, false) => Line::Complete,
            });
        }
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        reader.consume(used);
        if done {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<(Line, Vec<u8>)> {
        let mut reader = tokio::io::BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let l = read_line_bounded(&mut reader, &mut buf, max).await.unwrap();
            if l == Line::Eof {
                return out;
            }
            out.push((l, buf.clone()));
        }
    }

    #[tokio::test]
    async fn over_long_line_is_skipped_and_next_line_is_read() {
        let got = lines(b"abc\n0123456789abcdef\nok\n", 8).await;
        assert_eq!(
            got,
            vec![
                (Line::Complete, b"abc".to_vec()),
                (Line::TooLong, vec![]),
                (Line::Complete, b"ok".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn last_line_without_newline_counts() {
        let got = lines(b"a\r\nbc", 8).await;
        assert_eq!(
            got,
            vec![
                (Line::Complete, b"a".to_vec()),
                (Line::Complete, b"bc".to_vec())
            ]
        );
    }

    #[tokio::test]
    async fn line_of_exactly_max_bytes_is_accepted() {
        let got = lines(b"12345678\n123456789\n", 8).await;
        assert_eq!(got[0], (Line::Complete, b"12345678".to_vec()));
        assert_eq!(got[1].0, Line::TooLong);
    }
}
