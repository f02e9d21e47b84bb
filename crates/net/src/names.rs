//! Local peer names: what a user may type, and how a name a peer gives itself becomes a
//! safe, unique local name.
//!
//! Invariant: every name this module returns passes [`validate_name`], so the daemon may
//! use it in a file name (`connection-request-<name>.json`) as it is.

/// Longest local name, in bytes.
pub const NAME_MAX: usize = 64;

/// Checks a local peer name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("a name cannot be empty");
    }
    if name.len() > NAME_MAX {
        return Err("a name is at most 64 bytes");
    }
    if name.starts_with(['.', '-']) {
        return Err("a name cannot start with '.' or '-'");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err("a name uses only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// Turns a name a peer chose into a valid local name (not yet unique).
pub(crate) fn sanitize(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
        if out.len() >= 32 {
            break;
        }
    }
    let out = out.trim_start_matches(['.', '-']).trim_end_matches('-');
    if out.is_empty() { "peer".to_owned() } else { out.to_owned() }
}

/// `base`, or `base-2`, `base-3`, ... whichever `taken` says is free first.
pub(crate) fn unique(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_owned();
    }
    (2u32..=100_000)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !taken(n))
        .unwrap_or_else(|| base.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitized_names_are_valid() {
        for raw in ["", "alice", "Bob Smith", "../../etc", "-x-", "名前", "a/b\0c", &"z".repeat(99)]
        {
            let s = sanitize(raw);
            assert_eq!(validate_name(&s), Ok(()), "{raw:?} -> {s:?}");
        }
        assert_eq!(sanitize("Bob Smith"), "Bob-Smith");
        assert_eq!(sanitize("../../etc"), "etc");
        assert_eq!(sanitize(""), "peer");
    }

    #[test]
    fn unique_appends_a_counter() {
        let taken = ["bob", "bob-2"];
        assert_eq!(unique("bob", |n| taken.contains(&n)), "bob-3");
        assert_eq!(unique("carol", |n| taken.contains(&n)), "carol");
    }

    #[test]
    fn user_names_are_checked() {
        assert!(validate_name("bob").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(".hidden").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
    }
}
