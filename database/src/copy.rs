//! Encodes snapshots in PostgreSQL's binary COPY format. Pure: bytes in, bytes out.
//! Binary COPY is the cheapest way into PostgreSQL per row, and on this 2-core
//! machine the server's CPU is the ingest bottleneck, so we do the encoding here.

use chrono::{DateTime, Utc};
use model::GreekSnapshot;
use rust_decimal::Decimal;

/// Column order of [`encode_row`]; the COPY statement must name exactly these.
pub const COLUMNS: [&str; 24] = [
    "event_time",
    "received_at",
    "broker",
    "account_id",
    "contract_key",
    "underlying",
    "quantity",
    "multiplier",
    "mark_price",
    "underlying_price",
    "implied_vol",
    "delta",
    "gamma",
    "theta",
    "vega",
    "rho",
    "position_delta",
    "position_gamma",
    "position_theta",
    "position_vega",
    "position_rho",
    "greeks_source",
    "source_seq",
    "position_side",
];

pub fn copy_statement() -> String {
    format!(
        "COPY greek_snapshots ({}) FROM STDIN (FORMAT binary)",
        COLUMNS.join(", ")
    )
}

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01 UTC.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// A growing binary COPY payload.
#[derive(Debug)]
pub struct CopyBuffer {
    buf: Vec<u8>,
    rows: usize,
}

impl CopyBuffer {
    pub fn with_capacity(rows: usize) -> Self {
        let mut buf = Vec::with_capacity(19 + rows * 260 + 2);
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self { buf, rows: 0 }
    }

    pub fn push(&mut self, s: &GreekSnapshot) {
        encode_row(&mut self.buf, s);
        self.rows += 1;
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The payload with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

fn put_len(buf: &mut Vec<u8>, len: usize) {
    buf.extend_from_slice(&(len as i32).to_be_bytes());
}

fn put_null(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&(-1i32).to_be_bytes());
}

fn put_ts(buf: &mut Vec<u8>, t: DateTime<Utc>) {
    put_len(buf, 8);
    buf.extend_from_slice(&(t.timestamp_micros() - PG_EPOCH_OFFSET_MICROS).to_be_bytes());
}

fn put_text(buf: &mut Vec<u8>, s: &str) {
    put_len(buf, s.len());
    buf.extend_from_slice(s.as_bytes());
}

fn put_f64(buf: &mut Vec<u8>, v: Option<f64>) {
    match v {
        Some(x) => {
            put_len(buf, 8);
            buf.extend_from_slice(&x.to_be_bytes());
        }
        None => put_null(buf),
    }
}

fn put_i64(buf: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(x) => {
            put_len(buf, 8);
            buf.extend_from_slice(&x.to_be_bytes());
        }
        None => put_null(buf),
    }
}

/// PostgreSQL's binary `numeric`: ndigits, weight, sign, dscale, then base-10000
/// digits, most significant first. `weight` is the power of 10000 of the first digit.
pub fn put_numeric(buf: &mut Vec<u8>, d: Decimal) {
    let scale = d.scale();
    let mut mantissa = d.mantissa().unsigned_abs();
    // Align the fraction to whole base-10000 digits.
    let pad = (4 - scale % 4) % 4;
    mantissa *= 10u128.pow(pad);
    let frac_groups = ((scale + pad) / 4) as i32;
    let mut groups: Vec<i16> = Vec::with_capacity(8);
    while mantissa > 0 {
        groups.push((mantissa % 10_000) as i16);
        mantissa /= 10_000;
    }
    // `groups` is least significant first; trailing (least significant) zeros carry
    // no information once dscale is set.
    let first_nonzero = groups.iter().position(|&g| g != 0).unwrap_or(groups.len());
    let weight = if groups.is_empty() {
        0
    } else {
        groups.len() as i32 - 1 - frac_groups
    };
    let digits = &groups[first_nonzero..];
    let sign: u16 = if d.is_sign_negative() && !digits.is_empty() {
        0x4000
    } else {
        0
    };
    put_len(buf, 8 + 2 * digits.len());
    buf.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    buf.extend_from_slice(&(weight as i16).to_be_bytes());
    buf.extend_from_slice(&sign.to_be_bytes());
    buf.extend_from_slice(&(scale as u16).to_be_bytes());
    for g in digits.iter().rev() {
        buf.extend_from_slice(&g.to_be_bytes());
    }
}

pub fn encode_row(buf: &mut Vec<u8>, s: &GreekSnapshot) {
    let c = s.contract();
    buf.extend_from_slice(&(COLUMNS.len() as i16).to_be_bytes());
    put_ts(buf, s.event_time);
    put_ts(buf, s.received_at);
    put_text(buf, s.broker().as_str());
    put_text(buf, &s.position.account_id);
    put_text(buf, c.key());
    put_text(buf, c.underlying());
    put_numeric(buf, s.position.quantity);
    put_numeric(buf, c.multiplier());
    put_f64(buf, s.mark_price);
    put_f64(buf, s.underlying_price);
    put_f64(buf, s.implied_vol);
    for g in [s.unit, s.total] {
        put_f64(buf, g.delta);
        put_f64(buf, g.gamma);
        put_f64(buf, g.theta);
        put_f64(buf, g.vega);
        put_f64(buf, g.rho);
    }
    match s.greeks_source {
        Some(src) => put_text(buf, src.as_str()),
        None => put_null(buf),
    }
    put_i64(buf, s.source_seq);
    put_text(buf, s.position.side.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn numeric(s: &str) -> Vec<u8> {
        let mut b = Vec::new();
        put_numeric(&mut b, Decimal::from_str(s).unwrap());
        b
    }

    /// (ndigits, weight, sign, dscale, digits) read back from the encoding.
    fn parts(b: &[u8]) -> (i16, i16, u16, u16, Vec<i16>) {
        let be16 = |i: usize| [b[i], b[i + 1]];
        let n = i16::from_be_bytes(be16(4));
        let digits = (0..n as usize)
            .map(|k| i16::from_be_bytes(be16(12 + 2 * k)))
            .collect();
        (
            n,
            i16::from_be_bytes(be16(6)),
            u16::from_be_bytes(be16(8)),
            u16::from_be_bytes(be16(10)),
            digits,
        )
    }

    #[test]
    fn numeric_layouts_match_postgres() {
        // Layouts as PostgreSQL's numeric_send produces them.
        assert_eq!(parts(&numeric("0")), (0, 0, 0, 0, vec![]));
        assert_eq!(parts(&numeric("100")), (1, 0, 0, 0, vec![100]));
        assert_eq!(parts(&numeric("-3")), (1, 0, 0x4000, 0, vec![3]));
        assert_eq!(
            parts(&numeric("12345.678")),
            (3, 1, 0, 3, vec![1, 2345, 6780])
        );
        assert_eq!(parts(&numeric("0.001")), (1, -1, 0, 3, vec![10]));
        assert_eq!(parts(&numeric("10000")), (1, 1, 0, 0, vec![1]));
        assert_eq!(parts(&numeric("5912.50")), (2, 0, 0, 2, vec![5912, 5000]));
    }

    #[test]
    fn numeric_length_prefix_is_consistent() {
        for s in [
            "0",
            "1",
            "-99999999.123456789",
            "0.00001",
            "79228162514264337593543950335",
        ] {
            let b = numeric(s);
            let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            assert_eq!(len + 4, b.len(), "{s}");
        }
    }

    #[test]
    fn timestamps_are_micros_since_2000() {
        let mut b = Vec::new();
        put_ts(
            &mut b,
            DateTime::from_timestamp(946_684_800, 1_000).unwrap(),
        );
        assert_eq!(&b[4..], &1i64.to_be_bytes());
    }
}
