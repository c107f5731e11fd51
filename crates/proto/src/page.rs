//! The paging every List shares (docs/contracts.md): page sizes with a default and a maximum,
//! opaque page tokens, and pages cut to a byte budget.
//!
//! A token is the base64url (no padding) of `fb1:<list>:<cursor>`: `list` names the List that
//! gave it, so a token from another list is refused, and `cursor` is that list's keyset
//! position (the sort key of the last item of the page), which only the service reads.
//! Clients must treat tokens as opaque; their shape may change in any release.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use firebreak_domain::Error;

/// A page's size when the request asks for none (`page_size` 0).
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The largest page: a larger `page_size` is taken as this.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// The most bytes a page's items take, encoded: a quarter of gRPC's default 4 MiB message
/// limit, so a page always decodes.
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;
/// The longest token accepted (what a service gives is far shorter).
const MAX_TOKEN: usize = 1024;
const VERSION: &str = "fb1";

/// The page size to use for `asked`: `default` for 0, at most `max`.
pub fn size(asked: u32, default: u32, max: u32) -> u32 {
    match asked {
        0 => default,
        n => n.min(max),
    }
}

/// The page size of a List with the common limits ([`DEFAULT_PAGE_SIZE`], [`MAX_PAGE_SIZE`]).
pub fn list_size(asked: u32) -> u32 {
    size(asked, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
}

/// The token that continues list `list` after `cursor`.
pub fn token(list: &str, cursor: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{VERSION}:{list}:{cursor}"))
}

/// The token continuing after `cursor` when `more` items follow, else the empty token that
/// ends the listing.
pub fn next(list: &str, cursor: Option<String>, more: bool) -> String {
    match cursor {
        Some(c) if more => token(list, &c),
        _ => String::new(),
    }
}

/// The error for a token this list did not give (or a cursor in it that does not read).
pub fn invalid() -> Error {
    Error::Invalid {
        field: "page_token",
        reason: "not a token this list gave".into(),
    }
}

/// The cursor `token` holds for list `list`; `None` for the empty token (the first page).
/// Anything but a token this list gave is INVALID_ARGUMENT naming `page_token`.
pub fn cursor(list: &str, token: &str) -> Result<Option<String>, Error> {
    let token = token.trim();
    if token.is_empty() {
        return Ok(None);
    }
    if token.len() > MAX_TOKEN {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let rest = text
        .strip_prefix(VERSION)
        .and_then(|r| r.strip_prefix(':'))
        .and_then(|r| r.strip_prefix(list))
        .and_then(|r| r.strip_prefix(':'))
        .ok_or_else(invalid)?;
    if rest.contains('\0') {
        return Err(invalid());
    }
    Ok(Some(rest.to_owned()))
}

/// A cursor of two parts, `A.B` (a sort key and an id): the first parsed by `first`.
pub fn pair<T>(cursor: &str, first: impl FnOnce(&str) -> Option<T>) -> Result<(T, String), Error> {
    let (a, b) = cursor.split_once('.').ok_or_else(invalid)?;
    let a = first(a).ok_or_else(invalid)?;
    if b.is_empty() {
        return Err(invalid());
    }
    Ok((a, b.to_owned()))
}

/// The items of a page: at most `limit` of `items`, and no more than fit in `budget` bytes
/// encoded (but at least one). True as second value when more remain: some were left out, or
/// the source returned more than `limit` (ask it for one more than the page holds), or the
/// store stopped at its own byte bound (`read_bytes` reached `budget`).
pub fn fit<T: prost::Message>(
    items: Vec<T>,
    limit: usize,
    budget: usize,
    read_bytes: usize,
) -> (Vec<T>, bool) {
    let available = items.len();
    let mut out = Vec::with_capacity(available.min(limit));
    let mut bytes = 0;
    for item in items.into_iter().take(limit) {
        // The item's bytes plus its field tag and length prefix.
        let size = item.encoded_len() + 6;
        if !out.is_empty() && bytes + size > budget {
            break;
        }
        bytes += size;
        out.push(item);
    }
    let more = out.len() < available || read_bytes >= budget;
    (out, more)
}

/// One page of a list held in memory in a stable order (configuration, a catalogue, a
/// computed schedule): the items after `after` (by `key`, which the order sorts by and which
/// is unique), at most `limit` of them within [`MAX_PAGE_BYTES`]; with the token of the next
/// page. `items` must be sorted by `key` ascending.
pub fn in_memory<T: prost::Message, K: Ord>(
    list: &str,
    items: Vec<T>,
    key: impl Fn(&T) -> K,
    after: Option<K>,
    limit: u32,
    cursor: impl Fn(&T) -> String,
) -> (Vec<T>, String) {
    let rest: Vec<T> = match after {
        Some(after) => items.into_iter().filter(|i| key(i) > after).collect(),
        None => items,
    };
    let (page, more) = fit(rest, limit as usize, MAX_PAGE_BYTES, 0);
    let next = next(list, page.last().map(&cursor), more);
    (page, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_for_its_list_only() {
        let t = token("incidents", "1700000000.i-1");
        assert!(!t.contains("incidents"), "opaque: {t}");
        assert_eq!(
            cursor("incidents", &t).unwrap().as_deref(),
            Some("1700000000.i-1")
        );
        assert_eq!(cursor("incidents", "").unwrap(), None);
        assert_eq!(cursor("incidents", "  ").unwrap(), None);
        for bad in [
            token("runs", "r-1"),
            "not base64!".to_owned(),
            URL_SAFE_NO_PAD.encode("fb0:incidents:x"),
            URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
            "A".repeat(2000),
            URL_SAFE_NO_PAD.encode("fb1:incidents:a\0b"),
        ] {
            let e = cursor("incidents", &bad).unwrap_err().to_string();
            assert!(e.contains("page_token"), "{e}");
        }
    }

    #[test]
    fn sizes_default_and_clamp() {
        assert_eq!(list_size(0), 100);
        assert_eq!(list_size(7), 7);
        assert_eq!(list_size(5000), 1000);
        assert_eq!(size(0, 500, 1000), 500);
    }

    #[test]
    fn a_pair_cursor_reads_its_parts_or_refuses() {
        assert_eq!(
            pair("12.abc", |a| a.parse::<i64>().ok()).unwrap(),
            (12, "abc".to_owned())
        );
        for bad in ["12", "x.abc", "12."] {
            assert!(pair(bad, |a| a.parse::<i64>().ok()).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_in_memory_list_pages_through_every_item_once() {
        let items: Vec<String> = (0..25).map(|i| format!("n{i:02}")).collect();
        let (mut seen, mut token) = (Vec::new(), String::new());
        loop {
            let after = cursor("names", &token).unwrap();
            let (page, next) = in_memory(
                "names",
                items.clone(),
                |s: &String| s.clone(),
                after,
                10,
                |s| s.clone(),
            );
            assert!(page.len() <= 10);
            seen.extend(page);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(seen, items);
    }
}
