//! Kubernetes resource quantities (`500m`, `128Mi`, `1.5Gi`, `1e3`), parsed
//! exactly (no floating point) into nano-units.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Why a quantity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantity {input:?} is invalid: {reason}")]
pub struct QuantityError {
    /// The text that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A parsed quantity, held as an integer number of nano-units (rounded up
/// when the text is finer than that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity {
    nanos: i128,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// A quantity of `n` whole units.
    pub fn from_units(n: i64) -> Self {
        Self {
            nanos: i128::from(n) * NANO,
        }
    }

    /// A quantity of `n` thousandths (`n` millicores for cpu).
    pub fn from_milli(n: i64) -> Self {
        Self {
            nanos: i128::from(n) * 1_000_000,
        }
    }

    /// Parses the Kubernetes quantity grammar: a signed decimal number then
    /// a binary-SI (`Ki`..`Ei`), decimal-SI (`n u m k M G T P E`) or
    /// exponent (`e3`, `E-2`) suffix.
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let err = |reason| QuantityError {
            input: input.to_owned(),
            reason,
        };
        let s = input;
        if s.is_empty() {
            return Err(err("empty"));
        }
        let (neg, body) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_len = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, suffix) = body.split_at(num_len);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(err("expected a number"));
        }
        // mantissa / 10^scale
        let mut mantissa: i128 = 0;
        for d in int.bytes().chain(frac.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(d - b'0')))
                .ok_or_else(|| err("too large"))?;
        }
        let mut exp10: i32 = -(frac.len() as i32);
        let mut mult: i128 = 1;
        match suffix {
            "" => {}
            "Ki" => mult = 1 << 10,
            "Mi" => mult = 1 << 20,
            "Gi" => mult = 1 << 30,
            "Ti" => mult = 1 << 40,
            "Pi" => mult = 1 << 50,
            "Ei" => mult = 1 << 60,
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            other if other.starts_with(['e', 'E']) => {
                let e: i32 = other[1..].parse().map_err(|_| err("bad exponent"))?;
                if other[1..].starts_with('+') && other.len() == 2 {
                    return Err(err("bad exponent"));
                }
                exp10 = exp10.checked_add(e).ok_or_else(|| err("bad exponent"))?;
            }
            _ => return Err(err("unknown suffix")),
        }
        // nanos = mantissa * mult * 10^(exp10 + 9), rounded up.
        let shift = exp10.checked_add(9).ok_or_else(|| err("bad exponent"))?;
        let base = mantissa.checked_mul(mult).ok_or_else(|| err("too large"))?;
        let nanos = if shift >= 0 {
            if shift > 36 {
                if base == 0 {
                    0
                } else {
                    return Err(err("too large"));
                }
            } else {
                base.checked_mul(10i128.pow(shift as u32))
                    .ok_or_else(|| err("too large"))?
            }
        } else if -shift > 38 {
            i128::from(base != 0)
        } else {
            // Rounded up without `base + div - 1`, which overflows near i128::MAX.
            let div = 10i128.pow((-shift) as u32);
            base / div + i128::from(base % div != 0)
        };
        Ok(Self {
            nanos: if neg { -nanos } else { nanos },
        })
    }

    /// The value in whole units, rounded up (upstream `Value()`).
    pub fn value(&self) -> i64 {
        clamp(ceil_div(self.nanos, NANO))
    }

    /// The value in thousandths, rounded up (upstream `MilliValue()`).
    pub fn milli_value(&self) -> i64 {
        clamp(ceil_div(self.nanos, 1_000_000))
    }

    /// True for zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// True below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 {
        q + 1
    } else {
        q
    }
}

fn clamp(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Quantity {
    /// Whole units when exact, else milli-units, else nano-units.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos % NANO == 0 {
            write!(f, "{}", self.nanos / NANO)
        } else if self.nanos % 1_000_000 == 0 {
            write!(f, "{}m", self.nanos / 1_000_000)
        } else {
            write!(f, "{}n", self.nanos)
        }
    }
}

/// Parses a k8s-openapi quantity.
pub fn parse_k8s(
    q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
) -> Result<Quantity, QuantityError> {
    Quantity::parse(&q.0)
}

/// Compares two quantities given as text; unparsable text sorts lowest.
pub fn compare(a: &str, b: &str) -> Ordering {
    Quantity::parse(a).ok().cmp(&Quantity::parse(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_grammar() {
        let cases: &[(&str, i64, i64)] = &[
            // (text, value(), milli_value())
            ("0", 0, 0),
            ("1", 1, 1000),
            ("500m", 1, 500),
            ("100m", 1, 100),
            ("1.5", 2, 1500),
            ("0.1", 1, 100),
            (".5", 1, 500),
            ("5.", 5, 5000),
            ("128Mi", 134_217_728, 134_217_728_000),
            ("1Gi", 1 << 30, (1i64 << 30) * 1000),
            ("1.5Gi", 1_610_612_736, 1_610_612_736_000),
            ("1k", 1000, 1_000_000),
            ("1M", 1_000_000, 1_000_000_000),
            ("1e3", 1000, 1_000_000),
            ("1E-3", 1, 1),
            ("12e6", 12_000_000, 12_000_000_000),
            ("100u", 1, 1),
            ("1n", 1, 1),
            ("-1", -1, -1000),
            ("+2", 2, 2000),
            ("10Mi", 10_485_760, 10_485_760_000),
        ];
        for (s, v, m) in cases {
            let q = Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!((q.value(), q.milli_value()), (*v, *m), "{s}");
        }
        for bad in [
            "", "abc", "1.2.3", "1Qi", "1 Gi", "--1", "1e", "1ee3", "Mi", ".", "1KiB", "1mi",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn equality_across_notations() {
        assert_eq!(
            Quantity::parse("1").unwrap(),
            Quantity::parse("1000m").unwrap()
        );
        assert_eq!(
            Quantity::parse("1k").unwrap(),
            Quantity::parse("1e3").unwrap()
        );
        assert_eq!(
            Quantity::parse("1Ki").unwrap(),
            Quantity::parse("1024").unwrap()
        );
        assert_eq!(compare("100m", "0.1"), Ordering::Equal);
        assert_eq!(compare("1Gi", "1G"), Ordering::Greater);
        assert_eq!(Quantity::from_milli(250).to_string(), "250m");
        assert_eq!(Quantity::from_units(3).to_string(), "3");
    }

    /// Inputs the fuzzer found (CI's run of stop 27): an exponent near i32::MAX overflowed the
    /// shift, and a mantissa near i128::MAX overflowed the rounding up.
    #[test]
    fn extreme_exponents_and_mantissas_are_refused_or_exact() {
        assert!(Quantity::parse("1e2147483640").is_err());
        assert!(Quantity::parse("1e2147483647").is_err());
        let max = "170141183460469231731687303715884105727";
        let q = Quantity::parse(&format!("{max}e-10")).unwrap();
        assert_eq!(
            q,
            Quantity::parse(&format!("-{max}e-10"))
                .map(|n| Quantity { nanos: -n.nanos })
                .unwrap()
        );
        assert_eq!(q.nanos, i128::MAX / 10 + 1);
        assert_eq!(Quantity::parse(&q.to_string()).unwrap(), q);
    }
}
