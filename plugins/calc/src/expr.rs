//! A recursive-descent parser and exact evaluator for arithmetic.
//!
//! Grammar: `sum := product (('+' | '-') product)*`,
//! `product := power (('*' | '/') power)*`, `power := unary ('^' unary)?`
//! (right-associative), `unary := '-' unary | '+' unary | atom`,
//! `atom := number | '(' sum ')'`. Numbers: `12`, `0.5`, `.5`, `1e-3`.

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{Signed, ToPrimitive, Zero};

/// Deepest nesting of parentheses and unary signs.
const MAX_DEPTH: usize = 200;
/// Largest exponent magnitude (keeps results from exhausting memory).
const MAX_EXPONENT: u32 = 4096;

/// The exact value of `text`, or a message saying where it is wrong.
pub fn evaluate(text: &str) -> Result<BigRational, String> {
    let mut parser = Parser { bytes: text.as_bytes(), at: 0, depth: 0 };
    let value = parser.sum()?;
    parser.skip_space();
    if parser.at < parser.bytes.len() {
        return Err(format!("unexpected `{}` at character {}", parser.rest_char(), parser.at + 1));
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.bytes.get(self.at).copied()
    }

    fn rest_char(&self) -> char {
        std::str::from_utf8(&self.bytes[self.at..]).ok().and_then(|s| s.chars().next()).unwrap_or('?')
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(format!("nested deeper than {MAX_DEPTH} levels")) } else { Ok(()) }
    }

    fn sum(&mut self) -> Result<BigRational, String> {
        let mut value = self.product()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.at += 1;
            let rhs = self.product()?;
            value = if op == b'+' { value + rhs } else { value - rhs };
        }
        Ok(value)
    }

    fn product(&mut self) -> Result<BigRational, String> {
        let mut value = self.power()?;
        while let Some(op @ (b'*' | b'/')) = self.peek() {
            self.at += 1;
            let position = self.at;
            let rhs = self.power()?;
            if op == b'*' {
                value *= rhs;
            } else if rhs.is_zero() {
                return Err(format!("division by zero (the divisor ending at character {position})"));
            } else {
                value /= rhs;
            }
        }
        Ok(value)
    }

    fn power(&mut self) -> Result<BigRational, String> {
        let base = self.unary()?;
        if self.peek() != Some(b'^') {
            return Ok(base);
        }
        self.at += 1;
        self.enter()?;
        let exponent = self.power()?;
        self.depth -= 1;
        if !exponent.is_integer() {
            return Err(format!("exponent {exponent} is not an integer (results must stay exact)"));
        }
        let magnitude = exponent.abs().to_integer().to_u32().filter(|e| *e <= MAX_EXPONENT);
        let Some(magnitude) = magnitude else {
            return Err(format!("exponent {exponent} is larger than {MAX_EXPONENT}"));
        };
        if base.is_zero() && exponent.is_negative() {
            return Err("zero to a negative power".to_owned());
        }
        let raised = num_traits::pow(base, magnitude as usize);
        Ok(if exponent.is_negative() { raised.recip() } else { raised })
    }

    fn unary(&mut self) -> Result<BigRational, String> {
        match self.peek() {
            Some(sign @ (b'-' | b'+')) => {
                self.at += 1;
                self.enter()?;
                let value = self.unary()?;
                self.depth -= 1;
                Ok(if sign == b'-' { -value } else { value })
            }
            _ => self.atom(),
        }
    }

    fn atom(&mut self) -> Result<BigRational, String> {
        match self.peek() {
            Some(b'(') => {
                self.at += 1;
                self.enter()?;
                let value = self.sum()?;
                self.depth -= 1;
                if self.peek() != Some(b')') {
                    return Err(format!("missing `)` at character {}", self.at + 1));
                }
                self.at += 1;
                Ok(value)
            }
            Some(b'0'..=b'9' | b'.') => self.number(),
            Some(_) => Err(format!("unexpected `{}` at character {}", self.rest_char(), self.at + 1)),
            None => Err("the expression ends too early".to_owned()),
        }
    }

    fn number(&mut self) -> Result<BigRational, String> {
        let start = self.at;
        let digits = |p: &mut Self| {
            let from = p.at;
            while p.bytes.get(p.at).is_some_and(u8::is_ascii_digit) {
                p.at += 1;
            }
            std::str::from_utf8(&p.bytes[from..p.at]).unwrap_or_default().to_owned()
        };
        let whole = digits(self);
        let fraction = if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            digits(self)
        } else {
            String::new()
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(format!("a number is missing at character {}", start + 1));
        }
        let mut exponent: i64 = 0;
        if matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            let negative = match self.bytes.get(self.at) {
                Some(b'-') => {
                    self.at += 1;
                    true
                }
                Some(b'+') => {
                    self.at += 1;
                    false
                }
                _ => false,
            };
            let text = digits(self);
            let value: i64 = text.parse().map_err(|_| format!("bad exponent at character {}", self.at + 1))?;
            if value > i64::from(MAX_EXPONENT) {
                return Err(format!("exponent {value} is larger than {MAX_EXPONENT}"));
            }
            exponent = if negative { -value } else { value };
        }
        let mantissa: BigInt = format!("{whole}{fraction}").parse().unwrap_or_default();
        let shift = exponent - fraction.len() as i64;
        let ten = BigInt::from(10);
        let scale = num_traits::pow(ten, shift.unsigned_abs() as usize);
        Ok(if shift >= 0 { BigRational::from_integer(mantissa * scale) } else { BigRational::new(mantissa, scale) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(text: &str) -> String {
        match evaluate(text) {
            Ok(v) => v.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn exact_results() {
        assert_eq!(show("0.1 + 0.2"), "3/10");
        assert_eq!(show("1/3 * 3"), "1");
        assert_eq!(show("2^-2 + 1e2"), "401/4");
        assert_eq!(show("-(3 - 5)^3"), "8");
        assert_eq!(show("2^3^2"), "512");
        assert!(show("1/0").starts_with("error: division by zero"));
        assert!(show("2^0.5").contains("not an integer"));
        assert!(show("(1").contains("missing `)`"));
    }
}
