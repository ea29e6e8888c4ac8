//! libpq's multi-host URL (`postgres://u:p@h1:5432,h2:5432/db?target_session_attrs=read-write`), which sqlx does not
//! parse: one set of connect options per host, everything but the host and port shared.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

/// libpq parameters sqlx does not know, handled here (which host to keep is this module's decision, not a
/// parameter's): dropped before sqlx parses the rest.
const OURS: &[&str] = &["target_session_attrs", "load_balance_hosts"];

/// The connect options of each host `url` lists, in order. One host is the common case.
pub fn parse(url: &str) -> Result<Vec<PgConnectOptions>, sqlx::Error> {
    let bad = |why: &str| sqlx::Error::Configuration(format!("DATABASE_URL: {why}").into());
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("not a postgres:// URL"))?;
    // The authority ends at the path or the query; the user's part ends at its last `@`.
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (user, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let tail = without_our_parameters(tail);
    if hosts.is_empty() {
        // No host in the authority (`postgres:///db?host=/run/postgresql`): sqlx's own parse says where.
        return Ok(vec![PgConnectOptions::from_str(&format!("{scheme}://{user}{tail}"))?]);
    }
    hosts
        .split(',')
        .map(|host| {
            if host.is_empty() {
                return Err(bad("an empty host in the host list"));
            }
            let options = PgConnectOptions::from_str(&format!("{scheme}://{user}{host}{tail}"))?;
            // An IPv6 address keeps its URL brackets through sqlx's parse; a socket address has none.
            let bare = options.get_host().strip_prefix('[').and_then(|h| h.strip_suffix(']')).map(str::to_owned);
            Ok(match bare {
                Some(address) => options.host(&address),
                None => options,
            })
        })
        .collect()
}

fn without_our_parameters(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else { return tail.to_owned() };
    let kept: Vec<&str> =
        query.split('&').filter(|p| !OURS.contains(&p.split_once('=').map_or(*p, |(k, _)| k))).collect();
    if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_host_gets_the_same_user_database_and_parameters() {
        let hosts = parse(
            "postgres://u:p%40ss@db1:5433,db2,[::1]:6000/courier?target_session_attrs=read-write&sslmode=disable",
        )
        .expect("parses");
        let seen: Vec<(String, u16)> = hosts.iter().map(|o| (o.get_host().to_owned(), o.get_port())).collect();
        assert_eq!(seen, vec![("db1".into(), 5433), ("db2".into(), 5432), ("::1".into(), 6000)]);
        for o in &hosts {
            assert_eq!(o.get_username(), "u");
            assert_eq!(o.get_database(), Some("courier"));
        }
    }

    #[test]
    fn one_host_is_one_host_and_a_broken_list_is_an_error() {
        assert_eq!(parse("postgres://u@localhost/x").expect("parses").len(), 1);
        let socket = parse("postgres:///courier?host=/run/postgresql").expect("parses");
        assert_eq!(socket.len(), 1);
        assert_eq!(
            socket[0].get_socket().map(|p| p.to_string_lossy().into_owned()).as_deref(),
            Some("/run/postgresql")
        );
        assert!(parse("postgres://u@a,,b/x").is_err());
        assert!(parse("localhost:5432").is_err());
    }
}
