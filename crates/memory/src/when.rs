//! The time a recall query names: "yesterday", "last week", "in May",
//! "in 2022", "on 13 October, 2023", "3 days ago". Relative expressions are
//! read against the time the query is asked; calendar days are UTC.

use jiff::ToSpan;
use jiff::civil::Date;

/// A span of time a query names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Window {
    /// From (Unix ms, inclusive).
    pub from_ms: i64,
    /// To (Unix ms, exclusive).
    pub to_ms: i64,
    /// The words that named it.
    pub phrase: String,
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn month(word: &str) -> Option<i8> {
    const SHORT: [&str; 12] = ["jan", "feb", "", "apr", "", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let found =
        MONTHS.iter().position(|m| *m == word).or_else(|| SHORT.iter().position(|m| !m.is_empty() && *m == word));
    found.or_else(|| (word == "sept").then_some(8)).map(|i| i as i8 + 1)
}

fn number(word: &str) -> Option<i64> {
    const WORDS: [&str; 12] =
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"];
    let digits = word.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let ordinal = digits.len() < word.len() && matches!(&word[digits.len()..], "st" | "nd" | "rd" | "th");
    if !digits.is_empty() && (digits.len() == word.len() || ordinal) {
        return digits.parse().ok();
    }
    WORDS.iter().position(|w| *w == word).map(|n| n as i64)
}

fn year(word: &str) -> Option<i16> {
    let n = word.parse::<i16>().ok()?;
    (word.len() == 4 && (1900..=2200).contains(&n)).then_some(n)
}

fn ms(date: Date) -> Option<i64> {
    let at = jiff::tz::TimeZone::UTC.to_timestamp(date.to_datetime(jiff::civil::Time::midnight())).ok()?;
    Some(at.as_millisecond())
}

fn window(from: Date, to: Date, phrase: &[&str]) -> Option<Window> {
    Some(Window { from_ms: ms(from)?, to_ms: ms(to)?, phrase: phrase.join(" ") })
}

/// The first span of time `query` names, read against `now_ms`; `None`
/// when it names none.
pub fn window_in(query: &str, now_ms: i64) -> Option<Window> {
    let now = jiff::tz::TimeZone::UTC.to_datetime(jiff::Timestamp::from_millisecond(now_ms).ok()?).date();
    let lower = query.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let at = |i: usize| words.get(i).copied().unwrap_or("");
    for i in 0..words.len() {
        let w = words[i];
        // Days and weeks and months relative to now.
        match w {
            "today" | "tonight" => return window(now, now.tomorrow().ok()?, &[w]),
            "yesterday" => return window(now.yesterday().ok()?, now, &[w]),
            "last" | "this" | "past" => {
                let back = i64::from(w == "last");
                let phrase = [w, at(i + 1)];
                match at(i + 1) {
                    "week" => {
                        let monday = now
                            .checked_sub((i64::from(now.weekday().to_monday_zero_offset()) + 7 * back).days())
                            .ok()?;
                        return window(monday, monday.checked_add(7.days()).ok()?, &phrase);
                    }
                    "weekend" => {
                        let saturday = now
                            .checked_sub((i64::from(now.weekday().to_monday_zero_offset()) - 5 + 7 * back).days())
                            .ok()?;
                        return window(saturday, saturday.checked_add(2.days()).ok()?, &phrase);
                    }
                    "month" => {
                        let first = now.first_of_month().checked_sub((back as i32).months()).ok()?;
                        return window(first, first.checked_add(1.month()).ok()?, &phrase);
                    }
                    "year" => {
                        let first = Date::new(now.year() - back as i16, 1, 1).ok()?;
                        return window(first, first.checked_add(1.year()).ok()?, &phrase);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        // "3 days ago", "two weeks ago": that day, or that week.
        if let (Some(n), "ago") = (number(w), at(i + 2)) {
            let phrase = [w, at(i + 1), "ago"];
            match at(i + 1).trim_end_matches('s') {
                "day" => {
                    let day = now.checked_sub(n.days()).ok()?;
                    return window(day, day.tomorrow().ok()?, &phrase);
                }
                "week" => {
                    let day = now.checked_sub((7 * n).days()).ok()?;
                    return window(day.checked_sub(3.days()).ok()?, day.checked_add(4.days()).ok()?, &phrase);
                }
                "month" => {
                    let first = now.first_of_month().checked_sub((n as i32).months()).ok()?;
                    return window(first, first.checked_add(1.month()).ok()?, &phrase);
                }
                "year" => {
                    let first = Date::new(now.year() - n as i16, 1, 1).ok()?;
                    return window(first, first.checked_add(1.year()).ok()?, &phrase);
                }
                _ => {}
            }
        }
        // Calendar dates: "13 October 2023", "October 13, 2023", "May 2023", "in May".
        if let Some(m) = month(w) {
            // "may" and "march" are months only where a date is plainly meant.
            let dated = number(at(i + 1)).is_some()
                || number(at(i.wrapping_sub(1))).is_some()
                || year(at(i + 1)).is_some()
                || matches!(at(i.wrapping_sub(1)), "in" | "on" | "of" | "since" | "during" | "early" | "late" | "mid");
            if matches!(w, "may" | "march") && !dated {
                continue;
            }
            // "13 October", "the 3rd of May".
            let before = if at(i.wrapping_sub(1)) == "of" { i.checked_sub(2) } else { i.checked_sub(1) };
            let day_before = before.and_then(|j| number(words[j])).filter(|d| (1..=31).contains(d));
            let day_after = number(at(i + 1)).filter(|d| (1..=31).contains(d) && year(at(i + 1)).is_none());
            let (day, year_at) = match (day_before, day_after) {
                (_, Some(d)) => (Some(d), i + 2),
                (Some(d), None) => (Some(d), i + 1),
                (None, None) => (None, i + 1),
            };
            let named_year = year(at(year_at));
            let start = match (day_before, day_after) {
                (Some(_), None) => before.unwrap_or(i),
                _ => i,
            };
            let end = if named_year.is_some() { year_at + 1 } else { year_at };
            let phrase = &words[start..end.min(words.len())];
            let in_year = |y: i16| -> Option<Date> {
                match day {
                    Some(d) => Date::new(y, m, d as i8).ok(),
                    None => Date::new(y, m, 1).ok(),
                }
            };
            // Without a year: the latest such date not after now.
            let date = match named_year {
                Some(y) => in_year(y)?,
                None => match in_year(now.year()) {
                    Some(date) if date <= now => date,
                    _ => in_year(now.year() - 1)?,
                },
            };
            let end = if day.is_some() { date.tomorrow().ok()? } else { date.checked_add(1.month()).ok()? };
            return window(date, end, phrase);
        }
        if let Some(y) = year(w) {
            let first = Date::new(y, 1, 1).ok()?;
            return window(first, first.checked_add(1.year()).ok()?, &[w]);
        }
    }
    None
}

/// `2023-05-08 13:56` (UTC): how a turn's time is shown to a model.
pub fn date(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| jiff::tz::TimeZone::UTC.to_datetime(t).strftime("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        jiff::tz::TimeZone::UTC.to_timestamp(text.parse().expect("a civil datetime")).expect("UTC").as_millisecond()
    }

    fn named(query: &str, now: &str) -> Option<(i64, i64, String)> {
        window_in(query, at(now)).map(|w| (w.from_ms, w.to_ms, w.phrase))
    }

    #[test]
    fn calendar_dates_and_months_and_years() {
        let now = "2023-11-02T10:00";
        let day =
            |d: &str, p: &str| Some((at(&format!("{d}T00:00")), at(&format!("{d}T00:00")) + 86_400_000, p.to_owned()));
        assert_eq!(named("What did Caroline share on October 13, 2023?", now), day("2023-10-13", "october 13 2023"));
        assert_eq!(named("What did Gina find on 1 February, 2023?", now), day("2023-02-01", "1 february 2023"));
        assert_eq!(named("and on the 3rd of May?", now), day("2023-05-03", "3rd of may"));
        assert_eq!(
            named("When did Melanie go camping in June?", now),
            Some((at("2023-06-01T00:00"), at("2023-07-01T00:00"), "june".to_owned()))
        );
        // A month still to come this year means last year's.
        assert_eq!(
            named("in December", now),
            Some((at("2022-12-01T00:00"), at("2023-01-01T00:00"), "december".to_owned()))
        );
        assert_eq!(
            named("in July 2022?", now),
            Some((at("2022-07-01T00:00"), at("2022-08-01T00:00"), "july 2022".to_owned()))
        );
        assert_eq!(
            named("trips in 2022", now),
            Some((at("2022-01-01T00:00"), at("2023-01-01T00:00"), "2022".to_owned()))
        );
        // "may" the verb names no time.
        assert_eq!(named("May I ask what you cooked?", now), None);
        assert_eq!(named("what did we cook", now), None);
    }

    #[test]
    fn relative_expressions_read_against_now() {
        // A Thursday.
        let now = "2023-11-02T10:00";
        assert_eq!(
            named("yesterday", now),
            Some((at("2023-11-01T00:00"), at("2023-11-02T00:00"), "yesterday".to_owned()))
        );
        assert_eq!(
            named("what happened last week?", now),
            Some((at("2023-10-23T00:00"), at("2023-10-30T00:00"), "last week".to_owned()))
        );
        assert_eq!(
            named("this week", now),
            Some((at("2023-10-30T00:00"), at("2023-11-06T00:00"), "this week".to_owned()))
        );
        assert_eq!(
            named("last weekend", now),
            Some((at("2023-10-28T00:00"), at("2023-10-30T00:00"), "last weekend".to_owned()))
        );
        assert_eq!(
            named("last month", now),
            Some((at("2023-10-01T00:00"), at("2023-11-01T00:00"), "last month".to_owned()))
        );
        assert_eq!(
            named("last year", now),
            Some((at("2022-01-01T00:00"), at("2023-01-01T00:00"), "last year".to_owned()))
        );
        assert_eq!(
            named("three days ago", now),
            Some((at("2023-10-30T00:00"), at("2023-10-31T00:00"), "three days ago".to_owned()))
        );
        assert_eq!(
            named("2 months ago", now),
            Some((at("2023-09-01T00:00"), at("2023-10-01T00:00"), "2 months ago".to_owned()))
        );
    }
}
