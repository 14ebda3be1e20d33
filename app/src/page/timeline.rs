//! How the conversation is laid out in time: lines grouped by sender (a run of one
//! sender's lines, each within [`GROUP_GAP_MILLIS`] of the one before, shows the name
//! once), a separator where a new day starts ("Today", "Yesterday", a date), and each
//! line's time, short and in full. Pure functions of the lines, the reader's "now" and
//! the reader's time zone offsets (passed in, so they are tested without a browser).

use crate::wire::ChatLine;

const MINUTE_MILLIS: i64 = 60_000;
const DAY_MILLIS: i64 = 24 * 60 * MINUTE_MILLIS;

/// Lines of one sender further apart than this start a new group.
pub const GROUP_GAP_MILLIS: u64 = 5 * MINUTE_MILLIS as u64;

/// A moment in the reader's time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    /// Milliseconds since 1970-01-01 00:00 local time.
    local_millis: i64,
}

impl LocalTime {
    /// `millis` since the Unix epoch, read where the clock is `offset_minutes` behind UTC
    /// (JavaScript's `Date.getTimezoneOffset`: -60 in Paris in winter).
    pub fn new(millis: u64, offset_minutes: i32) -> LocalTime {
        LocalTime {
            local_millis: millis as i64 - i64::from(offset_minutes) * MINUTE_MILLIS,
        }
    }

    /// Days since 1970-01-01, local time.
    fn day(self) -> i64 {
        self.local_millis.div_euclid(DAY_MILLIS)
    }

    /// "14:05".
    pub fn clock(self) -> String {
        let minutes = self.local_millis.rem_euclid(DAY_MILLIS) / MINUTE_MILLIS;
        format!("{:02}:{:02}", minutes / 60, minutes % 60)
    }

    /// "Saturday 5 December 2026, 14:05": for hovering or pressing a line.
    pub fn in_full(self) -> String {
        format!("{}, {}", Date::of_day(self.day()).long(true), self.clock())
    }

    /// The ISO 8601 local date and time, for a `<time datetime>` attribute.
    pub fn iso(self) -> String {
        let date = Date::of_day(self.day());
        format!(
            "{:04}-{:02}-{:02}T{}",
            date.year,
            date.month,
            date.day,
            self.clock()
        )
    }
}

/// What a day separator says of the day `then` falls on, seen on the day `now` falls on:
/// "Today", "Yesterday", the weekday within the last week, else the date (with the year
/// when it is not this year's).
pub fn day_label(then: LocalTime, now: LocalTime) -> String {
    let days_ago = now.day() - then.day();
    let date = Date::of_day(then.day());
    match days_ago {
        0 => "Today".to_owned(),
        1 => "Yesterday".to_owned(),
        2..=6 => WEEKDAYS[date.weekday].to_owned(),
        _ => date.long(date.year != Date::of_day(now.day()).year),
    }
}

/// One row of the conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Row {
    /// The first line of a new day follows.
    Day { day: i64, label: String },
    Line {
        line: ChatLine,
        /// Whether this line starts a group, so shows its sender's name.
        first_of_group: bool,
        time: LocalTime,
    },
}

/// The rows for `lines` (oldest first), read at `now` in a zone whose offset at a given
/// moment `offset_at` tells (it changes with daylight saving time).
pub fn rows(lines: &[ChatLine], now: u64, offset_at: impl Fn(u64) -> i32) -> Vec<Row> {
    let now = LocalTime::new(now, offset_at(now));
    let mut rows = Vec::with_capacity(lines.len() + 1);
    let mut previous: Option<(&ChatLine, LocalTime)> = None;
    for line in lines {
        let time = LocalTime::new(line.time, offset_at(line.time));
        let new_day = previous.is_none_or(|(_, before)| before.day() != time.day());
        if new_day {
            rows.push(Row::Day {
                day: time.day(),
                label: day_label(time, now),
            });
        }
        let first_of_group = new_day
            || previous.is_none_or(|(before, _)| {
                before.name != line.name || line.time.abs_diff(before.time) > GROUP_GAP_MILLIS
            });
        rows.push(Row::Line {
            line: line.clone(),
            first_of_group,
            time,
        });
        previous = Some((line, time));
    }
    rows
}

const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A date of the proleptic Gregorian calendar.
struct Date {
    year: i64,
    /// 1 to 12.
    month: usize,
    /// 1 to 31.
    day: i64,
    /// 0 for Monday.
    weekday: usize,
}

impl Date {
    /// The date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
    fn of_day(days: i64) -> Date {
        let shifted = days + 719_468;
        let era = shifted.div_euclid(146_097);
        let day_of_era = shifted.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 {
            month_from_march + 3
        } else {
            month_from_march - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        // 1970-01-01 was a Thursday.
        let weekday = (days + 3).rem_euclid(7) as usize;
        Date {
            year,
            month: month as usize,
            day,
            weekday,
        }
    }

    /// "Saturday 5 December", and the year with `with_year`.
    fn long(&self, with_year: bool) -> String {
        let Date {
            year,
            month,
            day,
            weekday,
        } = self;
        let date = format!("{} {day} {}", WEEKDAYS[*weekday], MONTHS[month - 1]);
        match with_year {
            true => format!("{date} {year}"),
            false => date,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-05 12:00 UTC, a Saturday.
    const NOON: u64 = 1_796_472_000_000;
    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;

    fn utc(millis: u64) -> LocalTime {
        LocalTime::new(millis, 0)
    }

    fn line(id: u64, name: &str, time: u64) -> ChatLine {
        ChatLine {
            id,
            name: name.into(),
            msg: format!("line {id}"),
            time,
        }
    }

    /// The rows as short strings: "[label]", "Name: line N" for a group's first line,
    /// "  line N" for the others.
    fn shape(rows: &[Row]) -> Vec<String> {
        rows.iter()
            .map(|row| match row {
                Row::Day { label, .. } => format!("[{label}]"),
                Row::Line {
                    line,
                    first_of_group: true,
                    ..
                } => format!("{}: {}", line.name, line.msg),
                Row::Line { line, .. } => format!("  {}", line.msg),
            })
            .collect()
    }

    #[test]
    fn dates_and_times_in_full() {
        assert_eq!(utc(NOON).in_full(), "Saturday 5 December 2026, 12:00");
        assert_eq!(utc(NOON).iso(), "2026-12-05T12:00");
        assert_eq!(utc(0).in_full(), "Thursday 1 January 1970, 00:00");
        // 2024-02-29 23:59 UTC: a leap day.
        assert_eq!(
            utc(1_709_251_140_000).in_full(),
            "Thursday 29 February 2024, 23:59"
        );
        assert_eq!(utc(1_709_251_140_000 + 60_000).iso(), "2024-03-01T00:00");
    }

    #[test]
    fn the_offset_moves_the_clock_and_the_day() {
        // Paris in winter is one hour ahead of UTC: JavaScript's offset is -60.
        assert_eq!(LocalTime::new(NOON, -60).clock(), "13:00");
        // New York is five hours behind: 02:00 UTC is still the day before there.
        let early = NOON - 10 * HOUR;
        assert_eq!(
            LocalTime::new(early, 300).in_full(),
            "Friday 4 December 2026, 21:00"
        );
        assert_eq!(
            day_label(LocalTime::new(early, 300), LocalTime::new(NOON, 300)),
            "Yesterday"
        );
        assert_eq!(day_label(utc(early), utc(NOON)), "Today");
    }

    #[test]
    fn day_labels_relative_to_today() {
        let now = utc(NOON);
        assert_eq!(day_label(utc(NOON - 12 * HOUR), now), "Today");
        assert_eq!(day_label(utc(NOON - 12 * HOUR - 1), now), "Yesterday");
        assert_eq!(day_label(utc(NOON - 2 * DAY), now), "Thursday");
        assert_eq!(day_label(utc(NOON - 6 * DAY), now), "Sunday");
        assert_eq!(day_label(utc(NOON - 7 * DAY), now), "Saturday 28 November");
        assert_eq!(
            day_label(utc(NOON - 340 * DAY), now),
            "Tuesday 30 December 2025"
        );
    }

    #[test]
    fn lines_of_one_sender_close_in_time_form_a_group() {
        let lines = [
            line(1, "Ann", NOON),
            line(2, "Ann", NOON + GROUP_GAP_MILLIS),
            line(3, "Bo", NOON + GROUP_GAP_MILLIS + 1),
            line(4, "Ann", NOON + GROUP_GAP_MILLIS + 2),
            line(5, "Ann", NOON + 2 * GROUP_GAP_MILLIS + 3),
        ];
        let rows = rows(&lines, NOON + HOUR, |_| 0);
        assert_eq!(
            shape(&rows),
            [
                "[Today]",
                "Ann: line 1",
                "  line 2",
                "Bo: line 3",
                "Ann: line 4",
                "Ann: line 5"
            ]
        );
    }

    #[test]
    fn a_new_day_gets_a_separator_and_starts_a_group() {
        let lines = [
            line(1, "Ann", NOON - 8 * DAY),
            line(2, "Ann", NOON - 12 * HOUR - 3 * 60_000),
            line(3, "Ann", NOON - 12 * HOUR - 60_000),
            line(4, "Ann", NOON - 12 * HOUR + 60_000),
            line(5, "Bo", NOON),
        ];
        assert_eq!(
            shape(&rows(&lines, NOON, |_| 0)),
            [
                "[Friday 27 November]",
                "Ann: line 1",
                "[Yesterday]",
                "Ann: line 2",
                "  line 3",
                "[Today]",
                "Ann: line 4",
                "Bo: line 5"
            ]
        );
        assert!(rows(&[], NOON, |_| 0).is_empty());
    }

    #[test]
    fn each_moment_is_read_with_its_own_offset() {
        // Daylight saving time ended between the two lines: at 23:30 UTC the reader's
        // clock was an hour ahead (the next day), at the later line it is not.
        let lines = [
            line(1, "Ann", NOON - 12 * HOUR - 30 * 60_000),
            line(2, "Ann", NOON),
        ];
        let offset_at = |millis: u64| if millis < NOON - 6 * HOUR { -60 } else { 0 };
        assert_eq!(
            shape(&rows(&lines, NOON, offset_at)),
            ["[Today]", "Ann: line 1", "Ann: line 2"],
            "both lines are on the reader's today, more than five minutes apart"
        );
    }
}
