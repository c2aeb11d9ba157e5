//! MariaDB/MySQL binlog file names: `BASE.000042`, where BASE is the file name part of the
//! server's log_bin_basename and the digits are the file's sequence number.

/// `mysql-bin.000042` -> 42 when it is named after `base`.
pub fn sequence(name: &str, base: &str) -> Option<u64> {
    let digits = name.strip_prefix(base)?.strip_prefix('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The name of file number `seq`: the server pads to six digits, and uses more past 999999.
pub fn file_name(base: &str, seq: u64) -> String {
    format!("{base}.{seq:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_refused() {
        assert_eq!(sequence("mysql-bin.000042", "mysql-bin"), Some(42));
        assert_eq!(file_name("mysql-bin", 42), "mysql-bin.000042");
        assert_eq!(sequence(&file_name("b", 1234567), "b"), Some(1234567));
        assert_eq!(sequence("mysql-bin.index", "mysql-bin"), None);
        assert_eq!(sequence("other.000001", "mysql-bin"), None);
        assert_eq!(sequence("mysql-bin.", "mysql-bin"), None);
    }
}
