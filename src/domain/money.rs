//! Money: an integer amount of a currency's minor units (cents, yen) and
//! its ISO 4217 currency. No floats anywhere: amounts add, multiply and
//! prorate exactly, and rounding happens once, where the rule says, half
//! away from zero.

use std::fmt;

use super::Invalid;

/// An ISO 4217 currency this server accepts, with its minor-unit exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

/// Active ISO 4217 codes and their minor-unit exponents. A code not listed
/// is refused; adding one is a line here.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("MAD", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PEN", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
];

/// Every code [`Currency::parse`] accepts, in order.
pub fn currency_codes() -> impl Iterator<Item = &'static str> {
    CURRENCIES.iter().map(|(code, _)| *code)
}

impl Currency {
    /// A currency by its ISO 4217 code, upper case (`"EUR"`).
    pub fn parse(code: &str) -> Result<Self, Invalid> {
        CURRENCIES
            .iter()
            .find(|(known, _)| *known == code)
            .map(|(known, exponent)| {
                let b = known.as_bytes();
                Currency { code: [b[0], b[1], b[2]], exponent: *exponent }
            })
            .ok_or_else(|| Invalid::new("currency", "must be an ISO 4217 currency code such as EUR or USD"))
    }

    pub fn code(&self) -> &str {
        // Built only from the ASCII table above.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Digits after the decimal point: 2 for EUR, 0 for JPY, 3 for BHD.
    pub fn exponent(&self) -> u8 {
        self.exponent
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount of money. Negative amounts are credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    /// Minor units: 1999 EUR is €19.99.
    pub amount: i64,
    pub currency: Currency,
}

/// Why arithmetic on money failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Two currencies in one sum (an order or invoice in one currency only).
    #[error("amounts in {0} and {1} cannot be added")]
    MixedCurrencies(Currency, Currency),
    /// Past what an `i64` of minor units holds.
    #[error("the amount is too large")]
    Overflow,
}

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Self { amount: 0, currency }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::MixedCurrencies(self.currency, other.currency));
        }
        let amount = self.amount.checked_add(other.amount).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount, currency: self.currency })
    }

    /// `quantity` times this amount (a line of an order).
    pub fn times(self, quantity: i64) -> Result<Money, MoneyError> {
        let amount = self.amount.checked_mul(quantity).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount, currency: self.currency })
    }

    pub fn negated(self) -> Money {
        Money { amount: -self.amount, currency: self.currency }
    }

    /// The sum of `amounts`, all in `currency`.
    pub fn sum(currency: Currency, amounts: impl IntoIterator<Item = Money>) -> Result<Money, MoneyError> {
        amounts.into_iter().try_fold(Money::zero(currency), Money::checked_add)
    }

    /// This amount times `numerator / denominator`, rounded half away from
    /// zero to the minor unit: the share of a price for part of a period
    /// (`remaining_seconds / period_seconds`). Exact: computed in 128 bits.
    pub fn prorated(self, numerator: i64, denominator: i64) -> Result<Money, MoneyError> {
        if denominator <= 0 {
            return Err(MoneyError::Overflow);
        }
        let product = i128::from(self.amount) * i128::from(numerator);
        let denominator = i128::from(denominator);
        let (quotient, remainder) = (product / denominator, product % denominator);
        // Half away from zero: a remainder of at least half rounds outward.
        let rounded = if 2 * remainder.abs() >= denominator { quotient + product.signum() } else { quotient };
        let amount = i64::try_from(rounded).map_err(|_| MoneyError::Overflow)?;
        Ok(Money { amount, currency: self.currency })
    }
}

impl fmt::Display for Money {
    /// `19.99 EUR`, `-15.00 EUR`, `500 JPY`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exponent = u32::from(self.currency.exponent);
        if exponent == 0 {
            return write!(f, "{} {}", self.amount, self.currency);
        }
        let scale = 10u64.pow(exponent);
        let magnitude = self.amount.unsigned_abs();
        let sign = if self.amount < 0 { "-" } else { "" };
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            magnitude / scale,
            magnitude % scale,
            self.currency,
            width = exponent as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(amount: i64) -> Money {
        Money::new(amount, Currency::parse("EUR").unwrap())
    }

    #[test]
    fn currencies_are_iso_codes_with_their_exponents() {
        assert_eq!(Currency::parse("EUR").unwrap().exponent(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("BHD").unwrap().exponent(), 3);
        for bad in ["eur", "EURO", "XYZ", "", "€"] {
            assert_eq!(Currency::parse(bad).unwrap_err().field, "currency", "{bad}");
        }
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0), "the table stays sorted and unique");
    }

    #[test]
    fn sums_refuse_mixed_currencies_and_overflow() {
        let usd = Money::new(1, Currency::parse("USD").unwrap());
        assert_eq!(eur(1999).checked_add(eur(1)), Ok(eur(2000)));
        assert!(matches!(eur(1).checked_add(usd), Err(MoneyError::MixedCurrencies(..))));
        assert_eq!(eur(i64::MAX).checked_add(eur(1)), Err(MoneyError::Overflow));
        assert_eq!(eur(1999).times(3), Ok(eur(5997)));
        assert_eq!(eur(i64::MAX).times(2), Err(MoneyError::Overflow));
        let eur_code = Currency::parse("EUR").unwrap();
        assert_eq!(Money::sum(eur_code, [eur(1), eur(2), eur(-3)]), Ok(eur(0)));
        assert!(Money::sum(eur_code, [eur(1), usd]).is_err());
    }

    #[test]
    fn proration_rounds_half_away_from_zero() {
        let check = |amount: i64, num: i64, den: i64, expect: i64| {
            assert_eq!(eur(amount).prorated(num, den).unwrap().amount, expect, "{amount} x {num}/{den}");
        };
        // The worked example: half of a 30-day period.
        let period = 30 * 86_400;
        check(3000, period / 2, period, 1500);
        check(6000, period / 2, period, 3000);
        check(1, 1, 2, 1); // 0.5 -> 1
        check(-1, 1, 2, -1); // -0.5 -> -1
        check(1, 1, 3, 0); // 0.33 -> 0
        check(2, 1, 3, 1); // 0.67 -> 1
        check(5, 1, 4, 1); // 1.25 -> 1
        check(6, 1, 4, 2); // 1.5 -> 2
        check(-6, 1, 4, -2);
        check(i64::MAX, 1, 1, i64::MAX);
        assert_eq!(eur(1).prorated(1, 0), Err(MoneyError::Overflow));
    }

    #[test]
    fn money_displays_in_major_units() {
        assert_eq!(eur(1999).to_string(), "19.99 EUR");
        assert_eq!(eur(-1500).to_string(), "-15.00 EUR");
        assert_eq!(eur(5).to_string(), "0.05 EUR");
        assert_eq!(Money::new(500, Currency::parse("JPY").unwrap()).to_string(), "500 JPY");
        assert_eq!(Money::new(1234, Currency::parse("BHD").unwrap()).to_string(), "1.234 BHD");
    }
}
