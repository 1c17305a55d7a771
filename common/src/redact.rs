//! URLs as logs and error messages show them: a backend URL may carry a password (Redis AUTH in
//! `redis://:secret@host`, SASL settings in the query of `kafka://host?sasl.password=secret`).

/// `url` without the password of its user info and without its query.
pub fn url_without_secrets(url: &str) -> String {
    let without_query = url.split_once('?').map_or(url, |(before, _)| before);
    let Some((scheme, rest)) = without_query.split_once("://") else {
        return without_query.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => without_query.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::url_without_secrets;

    #[test]
    fn passwords_and_queries_are_hidden_and_the_rest_kept() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:s3cr@t@cache:6379/2", "redis://:***@cache:6379/2"),
            (
                "rediss://recsys:pw@cache:6380",
                "rediss://recsys:***@cache:6380",
            ),
            (
                "kafka://b1:9093,b2:9093?sasl.password=pw&sasl.username=u",
                "kafka://b1:9093,b2:9093",
            ),
            ("embedded", "embedded"),
        ] {
            assert_eq!(url_without_secrets(url), shown, "{url}");
        }
    }
}
