//! kcmp(2) types, as in include/uapi/linux/kcmp.h.

/// Number of valid kcmp types (`KCMP_FILE` ..= `KCMP_EPOLL_TFD`).
pub const KCMP_TYPES: usize = 8;
/// Per-type counter slots: the valid types plus one for out-of-range types.
pub const TYPE_SLOTS: usize = KCMP_TYPES + 1;
/// The slot that collects every out-of-range type.
pub const TYPE_SLOT_INVALID: u32 = KCMP_TYPES as u32;

pub const KCMP_FILE: u32 = 0;
pub const KCMP_VM: u32 = 1;
pub const KCMP_FILES: u32 = 2;
pub const KCMP_FS: u32 = 3;
pub const KCMP_SIGHAND: u32 = 4;
pub const KCMP_IO: u32 = 5;
pub const KCMP_SYSVSEM: u32 = 6;
pub const KCMP_EPOLL_TFD: u32 = 7;

const TYPE_NAMES: [&str; TYPE_SLOTS] = [
    "KCMP_FILE",
    "KCMP_VM",
    "KCMP_FILES",
    "KCMP_FS",
    "KCMP_SIGHAND",
    "KCMP_IO",
    "KCMP_SYSVSEM",
    "KCMP_EPOLL_TFD",
    "invalid",
];

/// Counter slot of a raw `type` argument (the syscall takes an `int`).
#[inline(always)]
pub fn type_slot(raw_type: u64) -> u32 {
    if raw_type < KCMP_TYPES as u64 {
        raw_type as u32
    } else {
        TYPE_SLOT_INVALID
    }
}

/// Name of a type slot: `KCMP_FILE` .. `KCMP_EPOLL_TFD`, or `invalid`.
pub fn type_slot_name(slot: u32) -> &'static str {
    TYPE_NAMES.get(slot as usize).copied().unwrap_or("invalid")
}

/// Parses a type name as users write it: `file`, `KCMP_FILE`, `epoll_tfd` or a number.
pub fn parse_type(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    fn short(full: &str) -> &str {
        full.strip_prefix("KCMP_").unwrap_or(full)
    }
    TYPE_NAMES[..KCMP_TYPES]
        .iter()
        .position(|full| full.eq_ignore_ascii_case(name) || short(full).eq_ignore_ascii_case(name))
        .map(|i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_names() {
        assert_eq!(type_slot(0), KCMP_FILE);
        assert_eq!(type_slot(7), KCMP_EPOLL_TFD);
        assert_eq!(type_slot(8), TYPE_SLOT_INVALID);
        // A negative int arrives sign-extended.
        assert_eq!(type_slot(-1i64 as u64), TYPE_SLOT_INVALID);
        assert_eq!(type_slot_name(KCMP_VM), "KCMP_VM");
        assert_eq!(type_slot_name(TYPE_SLOT_INVALID), "invalid");
        assert_eq!(type_slot_name(99), "invalid");
    }

    #[test]
    fn parses_user_spellings() {
        assert_eq!(parse_type("file"), Some(KCMP_FILE));
        assert_eq!(parse_type("KCMP_EPOLL_TFD"), Some(KCMP_EPOLL_TFD));
        assert_eq!(parse_type("sysvsem"), Some(KCMP_SYSVSEM));
        assert_eq!(parse_type("42"), Some(42));
        assert_eq!(parse_type("nope"), None);
        assert_eq!(parse_type("invalid"), None);
    }
}
