//! Building an endpoint's URL from `models.*.base_url` and a path (`chat/completions`,
//! `models`).
//!
//! Invariant: the path is joined to the base URL's path, before its query and fragment
//! (`http://h/v1?key=K` + `models` is `http://h/v1/models?key=K`), with exactly one `/`
//! between them. Hand-written rather than `Url::join`, which would drop the base's last
//! path segment and its query.

/// `base` with `path` appended to its path, its query and fragment kept after it.
pub(crate) fn endpoint_url(base: &str, path: &str) -> String {
    let split = base.find(['?', '#']).unwrap_or(base.len());
    let (base_path, query_and_fragment) = base.split_at(split);
    format!(
        "{}/{}{}",
        base_path.trim_end_matches('/'),
        path.trim_start_matches('/'),
        query_and_fragment
    )
}

#[cfg(test)]
mod tests {
    use super::endpoint_url;

    #[test]
    fn the_path_goes_before_the_query() {
        assert_eq!(
            endpoint_url("http://u:p@h:1/v1?key=Q", "models"),
            "http://u:p@h:1/v1/models?key=Q"
        );
        assert_eq!(
            endpoint_url("http://h/v1/", "/chat/completions"),
            "http://h/v1/chat/completions"
        );
        assert_eq!(
            endpoint_url("http://h/v1#f", "models"),
            "http://h/v1/models#f"
        );
        assert_eq!(endpoint_url("http://h", "models"), "http://h/models");
    }
}
