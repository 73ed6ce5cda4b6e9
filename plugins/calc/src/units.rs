//! Units as exact factors to a base unit per dimension (SI, by definition
//! where a definition exists), plus offsets for temperatures.

use num_rational::BigRational;
use num_traits::Zero;

use crate::expr::evaluate;

/// `(names, dimension, factor to the base unit, offset added after scaling)`.
const UNITS: &[(&[&str], &str, &str, &str)] = &[
    // length, base metre
    (&["m", "meter", "metre", "meters", "metres"], "length", "1", "0"),
    (&["km", "kilometer", "kilometre", "kilometers", "kilometres"], "length", "1000", "0"),
    (&["cm", "centimeter", "centimetre", "centimeters"], "length", "1/100", "0"),
    (&["mm", "millimeter", "millimetre", "millimeters"], "length", "1/1000", "0"),
    (&["um", "µm", "micrometer", "micron"], "length", "1e-6", "0"),
    (&["nm", "nanometer", "nanometre"], "length", "1e-9", "0"),
    (&["in", "inch", "inches"], "length", "0.0254", "0"),
    (&["ft", "foot", "feet"], "length", "0.3048", "0"),
    (&["yd", "yard", "yards"], "length", "0.9144", "0"),
    (&["mi", "mile", "miles"], "length", "1609.344", "0"),
    (&["nmi", "nautical mile", "nautical miles"], "length", "1852", "0"),
    // area, base square metre
    (&["m2", "m^2", "square meter", "square metre"], "area", "1", "0"),
    (&["km2", "km^2", "square kilometer"], "area", "1e6", "0"),
    (&["cm2", "cm^2"], "area", "1e-4", "0"),
    (&["ha", "hectare", "hectares"], "area", "1e4", "0"),
    (&["acre", "acres"], "area", "4046.8564224", "0"),
    (&["ft2", "ft^2", "square foot", "square feet"], "area", "0.3048^2", "0"),
    (&["in2", "in^2", "square inch"], "area", "0.0254^2", "0"),
    // volume, base cubic metre
    (&["m3", "m^3", "cubic meter", "cubic metre"], "volume", "1", "0"),
    (&["l", "L", "liter", "litre", "liters", "litres"], "volume", "1e-3", "0"),
    (&["ml", "mL", "milliliter", "millilitre"], "volume", "1e-6", "0"),
    (&["cm3", "cm^3", "cc"], "volume", "1e-6", "0"),
    (&["gal", "gallon", "gallons", "us gal"], "volume", "231 * 0.0254^3", "0"),
    (&["qt", "quart", "quarts"], "volume", "231 * 0.0254^3 / 4", "0"),
    (&["pt", "pint", "pints"], "volume", "231 * 0.0254^3 / 8", "0"),
    (&["floz", "fl oz", "fluid ounce"], "volume", "231 * 0.0254^3 / 128", "0"),
    (&["ft3", "ft^3", "cubic foot", "cubic feet"], "volume", "0.3048^3", "0"),
    // mass, base kilogram
    (&["kg", "kilogram", "kilograms"], "mass", "1", "0"),
    (&["g", "gram", "grams"], "mass", "1/1000", "0"),
    (&["mg", "milligram", "milligrams"], "mass", "1e-6", "0"),
    (&["t", "tonne", "tonnes", "metric ton"], "mass", "1000", "0"),
    (&["lb", "lbs", "pound", "pounds"], "mass", "0.45359237", "0"),
    (&["oz", "ounce", "ounces"], "mass", "0.45359237 / 16", "0"),
    (&["st", "stone"], "mass", "0.45359237 * 14", "0"),
    // time, base second
    (&["s", "sec", "second", "seconds"], "time", "1", "0"),
    (&["ms", "millisecond", "milliseconds"], "time", "1/1000", "0"),
    (&["us", "µs", "microsecond", "microseconds"], "time", "1e-6", "0"),
    (&["ns", "nanosecond", "nanoseconds"], "time", "1e-9", "0"),
    (&["min", "minute", "minutes"], "time", "60", "0"),
    (&["h", "hr", "hour", "hours"], "time", "3600", "0"),
    (&["d", "day", "days"], "time", "86400", "0"),
    (&["wk", "week", "weeks"], "time", "604800", "0"),
    // speed, base metre per second
    (&["m/s", "mps"], "speed", "1", "0"),
    (&["km/h", "kph", "kmh"], "speed", "1000/3600", "0"),
    (&["mph", "mi/h"], "speed", "1609.344/3600", "0"),
    (&["kn", "knot", "knots"], "speed", "1852/3600", "0"),
    (&["ft/s", "fps"], "speed", "0.3048", "0"),
    // energy, base joule
    (&["J", "joule", "joules"], "energy", "1", "0"),
    (&["kJ", "kilojoule"], "energy", "1000", "0"),
    (&["cal", "calorie"], "energy", "4.184", "0"),
    (&["kcal", "kilocalorie", "Cal"], "energy", "4184", "0"),
    (&["Wh", "watt hour"], "energy", "3600", "0"),
    (&["kWh", "kilowatt hour"], "energy", "3.6e6", "0"),
    (&["eV", "electronvolt"], "energy", "1.602176634e-19", "0"),
    (&["BTU", "btu"], "energy", "1055.05585262", "0"),
    // power, base watt
    (&["W", "watt", "watts"], "power", "1", "0"),
    (&["kW", "kilowatt", "kilowatts"], "power", "1000", "0"),
    (&["MW", "megawatt", "megawatts"], "power", "1e6", "0"),
    (&["mW", "milliwatt", "milliwatts"], "power", "1e-3", "0"),
    (&["hp", "horsepower"], "power", "745.69987158227022", "0"),
    // pressure, base pascal
    (&["Pa", "pascal"], "pressure", "1", "0"),
    (&["kPa", "kilopascal"], "pressure", "1000", "0"),
    (&["bar"], "pressure", "1e5", "0"),
    (&["atm", "atmosphere"], "pressure", "101325", "0"),
    (&["psi"], "pressure", "0.45359237 * 9.80665 / 0.0254^2", "0"),
    (&["mmHg", "torr", "Torr"], "pressure", "101325/760", "0"),
    // frequency, base hertz
    (&["Hz", "hertz"], "frequency", "1", "0"),
    (&["kHz"], "frequency", "1e3", "0"),
    (&["MHz"], "frequency", "1e6", "0"),
    (&["GHz"], "frequency", "1e9", "0"),
    // data, base byte
    (&["B", "byte", "bytes"], "data", "1", "0"),
    (&["bit", "bits"], "data", "1/8", "0"),
    (&["kB", "KB"], "data", "1e3", "0"),
    (&["MB"], "data", "1e6", "0"),
    (&["GB"], "data", "1e9", "0"),
    (&["TB"], "data", "1e12", "0"),
    (&["KiB"], "data", "2^10", "0"),
    (&["MiB"], "data", "2^20", "0"),
    (&["GiB"], "data", "2^30", "0"),
    (&["TiB"], "data", "2^40", "0"),
    // temperature, base kelvin
    (&["K", "kelvin"], "temperature", "1", "0"),
    (&["C", "°C", "celsius"], "temperature", "1", "273.15"),
    (&["F", "°F", "fahrenheit"], "temperature", "5/9", "459.67 * 5/9"),
];

struct Unit {
    dimension: &'static str,
    factor: BigRational,
    offset: BigRational,
}

fn unit(name: &str) -> Result<Unit, String> {
    let trimmed = name.trim();
    let found = UNITS
        .iter()
        .find(|(names, ..)| names.contains(&trimmed))
        .or_else(|| UNITS.iter().find(|(names, ..)| names.iter().any(|n| n.eq_ignore_ascii_case(trimmed))));
    let Some((_, dimension, factor, offset)) = found else {
        return Err(format!("unknown unit `{trimmed}`"));
    };
    Ok(Unit { dimension, factor: evaluate(factor)?, offset: evaluate(offset)? })
}

/// `value` in `from` expressed in `to`.
pub fn convert(value: &BigRational, from: &str, to: &str) -> Result<BigRational, String> {
    let (a, b) = (unit(from)?, unit(to)?);
    if a.dimension != b.dimension {
        return Err(format!("cannot convert {} (`{from}`) to {} (`{to}`)", a.dimension, b.dimension));
    }
    if b.factor.is_zero() {
        return Err(format!("`{to}` has no scale"));
    }
    let base = value * &a.factor + &a.offset;
    Ok((base - &b.offset) / &b.factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(v: &str, from: &str, to: &str) -> String {
        convert(&evaluate(v).unwrap(), from, to).map(|r| r.to_string()).unwrap_or_else(|e| e)
    }

    #[test]
    fn exact_conversions() {
        assert_eq!(conv("1", "in", "cm"), "127/50");
        assert_eq!(conv("1", "mi", "km"), "25146/15625");
        assert_eq!(conv("100", "C", "F"), "212");
        assert_eq!(conv("-40", "F", "C"), "-40");
        assert_eq!(conv("0", "K", "C"), "-5463/20");
        assert_eq!(conv("1", "GiB", "MB"), "16777216/15625");
        assert!(conv("1", "kg", "m").contains("cannot convert mass"));
        assert!(conv("1", "parsec", "m").contains("unknown unit"));
    }
}
