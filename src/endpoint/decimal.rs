//! Exact decimal numbers of any precision the engines allow, carried as their canonical
//! text (no 28-digit ceiling, no rounding anywhere), and PostgreSQL's binary `numeric` form.
//!
//! Owns: [`Decimal`] (parsing, the canonical text, numeric equality, the lossless checks that
//! conversions need) and [`Decimal::to_pg_numeric`] / [`Decimal::from_pg_numeric`].
//!
//! Does not own: which kinds a decimal converts to (`value.rs`), nor what a column can hold
//! (each engine's `inexact` rules).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// An exact decimal number: `[-]int[.frac]`, the integer part without leading zeros, the
/// fraction as written (its length is the scale: `12.50` keeps two digits). Equality and
/// hashing are numeric: `12.50 == 12.5`.
#[derive(Debug, Clone)]
pub struct Decimal {
    negative: bool,
    int: String,
    frac: String,
}

/// Text that is not a finite decimal number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a decimal number: {0:?}")]
pub struct DecimalError(pub String);

/// PostgreSQL `numeric` binary form: sign words.
const PG_POSITIVE: u16 = 0x0000;
const PG_NEGATIVE: u16 = 0x4000;
const PG_NAN: u16 = 0xC000;
const PG_PINF: u16 = 0xD000;
const PG_NINF: u16 = 0xF000;

impl Decimal {
    fn new(negative: bool, int: &str, frac: &str) -> Decimal {
        let int = int.trim_start_matches('0');
        let int = if int.is_empty() { "0" } else { int };
        let zero = int == "0" && frac.bytes().all(|b| b == b'0');
        Decimal {
            negative: negative && !zero,
            int: int.to_string(),
            frac: frac.to_string(),
        }
    }

    /// The same number without trailing zeros in the fraction (`12.50` → `12.5`, `3.0` → `3`).
    pub fn normalize(&self) -> Decimal {
        Decimal::new(self.negative, &self.int, self.frac.trim_end_matches('0'))
    }

    pub fn is_integer(&self) -> bool {
        self.frac.bytes().all(|b| b == b'0')
    }

    /// Digits after the point once trailing zeros are dropped.
    pub fn scale(&self) -> usize {
        self.frac.trim_end_matches('0').len()
    }

    /// Digits before the point (0 for `0.5`).
    pub fn integer_digits(&self) -> usize {
        if self.int == "0" { 0 } else { self.int.len() }
    }

    /// Significant digits: from the first non-zero digit to the last non-zero one.
    pub fn significant_digits(&self) -> usize {
        let all = format!("{}{}", self.int, self.frac);
        all.trim_start_matches('0').trim_end_matches('0').len()
    }

    /// The integer this is, if it is one in the 64-bit range.
    pub fn to_i64(&self) -> Option<i64> {
        if !self.is_integer() {
            return None;
        }
        let sign = if self.negative { "-" } else { "" };
        format!("{sign}{}", self.int).parse().ok()
    }

    /// The double nearest to this number (correctly rounded), finite or not.
    pub fn to_f64(&self) -> f64 {
        self.to_string().parse().unwrap_or(f64::NAN)
    }

    /// The decimal with the shortest text that reads back as `f` (so 0.1 is 0.1, not
    /// 0.1000000000000000055...); `None` for NaN and infinities.
    pub fn from_f64(f: f64) -> Option<Decimal> {
        if !f.is_finite() {
            return None;
        }
        // Rust writes a double's shortest round-trip digits positionally (no exponent): at
        // most 17 digits, a sign, a point and 324 zeros. Written on the stack, not the heap
        // (once per value read from a REAL column).
        let mut text = StackText::default();
        std::fmt::Write::write_fmt(&mut text, format_args!("{f}")).ok()?;
        text.as_str().parse().ok()
    }

    /// PostgreSQL's binary `numeric` form: digits in base 10000, exact, the scale kept.
    /// Groups of four digits are counted from the decimal point both ways (the integer part
    /// padded with zeros in front, the fraction behind); leading and trailing zero groups
    /// are left out, the weight saying where the first group stands.
    pub fn to_pg_numeric(&self, out: &mut Vec<u8>) {
        let (int, frac) = (self.int.as_bytes(), self.frac.as_bytes());
        let pad = (4 - int.len() % 4) % 4;
        let int_groups = (pad + int.len()) / 4;
        let total = int_groups + frac.len().div_ceil(4);
        let digit = |p: usize| -> u16 {
            let d = if p < pad {
                b'0'
            } else if p < pad + int.len() {
                int[p - pad]
            } else {
                *frac.get(p - pad - int.len()).unwrap_or(&b'0')
            };
            u16::from(d - b'0')
        };
        let group = |g: usize| (0..4).fold(0u16, |n, k| n * 10 + digit(g * 4 + k));
        let first = (0..total).find(|&g| group(g) != 0);
        let last = (0..total).rev().find(|&g| group(g) != 0);
        // No group other than zero: no digits, weight 0.
        let (groups, weight) = match (first, last) {
            (Some(first), Some(last)) => (first..last + 1, int_groups as i16 - 1 - first as i16),
            _ => (0..0, 0),
        };
        let sign = if self.negative {
            PG_NEGATIVE
        } else {
            PG_POSITIVE
        };
        out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&(self.frac.len() as u16).to_be_bytes());
        for g in groups {
            out.extend_from_slice(&group(g).to_be_bytes());
        }
    }

    /// Reads PostgreSQL's binary `numeric` form. NaN and ±Infinity are errors spelled as
    /// PostgreSQL spells them (`NaN`, `Infinity`, `-Infinity`): no decimal holds them.
    pub fn from_pg_numeric(raw: &[u8]) -> Result<Decimal, DecimalError> {
        let word = |i: usize| -> Result<u16, DecimalError> {
            raw.get(i * 2..i * 2 + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| DecimalError("truncated binary numeric".into()))
        };
        let ndigits = word(0)? as usize;
        let weight = word(1)? as i16 as i64;
        let sign = word(2)?;
        let dscale = word(3)? as usize;
        match sign {
            PG_NAN => return Err(DecimalError("NaN".into())),
            PG_PINF => return Err(DecimalError("Infinity".into())),
            PG_NINF => return Err(DecimalError("-Infinity".into())),
            _ => {}
        }
        let digits = (0..ndigits)
            .map(|i| word(4 + i))
            .collect::<Result<Vec<u16>, _>>()?;
        let group = |i: i64| -> u16 {
            usize::try_from(i)
                .ok()
                .and_then(|i| digits.get(i).copied())
                .unwrap_or(0)
        };
        let mut int = String::new();
        for i in 0..=weight.max(-1) {
            int.push_str(&format!("{:04}", group(i)));
        }
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", group(i)));
            i += 1;
        }
        frac.truncate(dscale);
        Ok(Decimal::new(sign == PG_NEGATIVE, &int, &frac))
    }
}

impl FromStr for Decimal {
    type Err = DecimalError;

    /// `[+-]digits[.digits][e[+-]digits]`, surrounding spaces allowed.
    fn from_str(s: &str) -> Result<Decimal, DecimalError> {
        let bad = || DecimalError(s.chars().take(64).collect());
        let t = s.trim();
        let (negative, t) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (mantissa, exp) = match t.find(['e', 'E']) {
            Some(at) => (&t[..at], t[at + 1..].parse::<i32>().map_err(|_| bad())?),
            None => (t, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let is_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !is_digits(int) || !is_digits(frac) {
            return Err(bad());
        }
        if exp.unsigned_abs() > 100_000 {
            return Err(bad());
        }
        // Move the point `exp` places.
        let digits = format!("{int}{frac}");
        let point = int.len() as i64 + i64::from(exp);
        let (int, frac) = if point <= 0 {
            (
                String::new(),
                format!("{}{digits}", "0".repeat(point.unsigned_abs() as usize)),
            )
        } else if point as usize >= digits.len() {
            (
                format!("{digits}{}", "0".repeat(point as usize - digits.len())),
                String::new(),
            )
        } else {
            let (i, f) = digits.split_at(point as usize);
            (i.to_string(), f.to_string())
        };
        Ok(Decimal::new(negative, &int, &frac))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        f.write_str(&self.int)?;
        if !self.frac.is_empty() {
            write!(f, ".{}", self.frac)?;
        }
        Ok(())
    }
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Decimal) -> bool {
        let (a, b) = (self.normalize(), other.normalize());
        a.negative == b.negative && a.int == b.int && a.frac == b.frac
    }
}

impl Eq for Decimal {}

impl Hash for Decimal {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.normalize().to_string().hash(state);
    }
}

impl From<i64> for Decimal {
    fn from(i: i64) -> Decimal {
        Decimal::new(i < 0, &i.unsigned_abs().to_string(), "")
    }
}

impl From<u64> for Decimal {
    fn from(u: u64) -> Decimal {
        Decimal::new(false, &u.to_string(), "")
    }
}

/// Text written on the stack ([`Decimal::from_f64`]); writing more than it holds fails.
struct StackText {
    bytes: [u8; 400],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            bytes: [0; 400],
            len: 0,
        }
    }
}

impl StackText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn parses_any_precision_and_keeps_the_scale() {
        let long = "1234567890123456789012345678.0123456789";
        assert_eq!(d(long).to_string(), long);
        assert_eq!(d("-0012.50").to_string(), "-12.50");
        assert_eq!(d("12.50"), d("12.5"));
        assert_eq!(d("-0.00").to_string(), "0.00");
        assert_eq!(d("1.5e3").to_string(), "1500");
        assert_eq!(d("1.5E-3").to_string(), "0.0015");
        assert_eq!(d(".5").to_string(), "0.5");
        for bad in ["", "-", "NaN", "Infinity", "1.2.3", "0x10", "1e"] {
            assert!(bad.parse::<Decimal>().is_err(), "{bad}");
        }
        assert_eq!(d("12.00").to_i64(), Some(12));
        assert_eq!(d("99999999999999999999").to_i64(), None);
        assert_eq!(d("0.0012300").significant_digits(), 3);
        assert_eq!(Decimal::from_f64(0.1), Some(d("0.1")));
        assert_eq!(
            Decimal::from_f64(1e22).unwrap().to_string(),
            "10000000000000000000000"
        );
    }

    #[test]
    fn postgres_binary_numeric_round_trips_exactly() {
        for text in [
            "0",
            "0.00",
            "1",
            "-1",
            "10000",
            "12.50",
            "0.0001",
            "0.00001",
            "-98765.4321",
            "1234567890123456789012345678.0123456789",
            "100000000000000000000000000000000000000",
            "0.000000000000000000000000000000000000001",
        ] {
            let mut raw = Vec::new();
            d(text).to_pg_numeric(&mut raw);
            let back = Decimal::from_pg_numeric(&raw).unwrap();
            assert_eq!(back.to_string(), text, "{text}");
        }
        // ndigits, weight, sign, dscale, then base-10000 digits.
        let mut raw = Vec::new();
        d("-12345.678").to_pg_numeric(&mut raw);
        let words: Vec<u16> = raw
            .chunks(2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .collect();
        assert_eq!(words, [3, 1, 0x4000, 3, 1, 2345, 6780]);
        raw.clear();
        d("0.00").to_pg_numeric(&mut raw);
        assert_eq!(raw, [0, 0, 0, 0, 0, 0, 0, 2]);
        for f in [0.1, -2.5e-7, 123456.789, 1e300, -5e-324, 0.0] {
            let decimal = Decimal::from_f64(f).unwrap();
            assert_eq!(decimal.to_string().parse::<f64>().unwrap(), f, "{f}");
            assert_eq!(decimal, d(&f.to_string()), "{f}");
        }
        let nan = [0, 0, 0, 0, 0xC0, 0, 0, 0];
        assert_eq!(
            Decimal::from_pg_numeric(&nan).unwrap_err(),
            DecimalError("NaN".into())
        );
    }
}
